// A Kafka client other than ours: Apache Kafka's own Java producer and consumer (the
// kafka-clients jar the local broker already runs on), launched as a single source file:
//
//   java -cp "$(bash deploy/local/kafka.sh libs)/*" ExternalKafkaClient.java produce BOOTSTRAP TOPIC CODEC [commit|abort]
//       reads KEY<TAB>VALUE lines from stdin (an empty KEY sends no key) and sends them with
//       compression.type=CODEC (none, gzip, snappy, lz4, zstd), acks=all, then flushes;
//       with commit or abort, inside one transaction that ends that way.
//   java -cp ... ExternalKafkaClient.java consume BOOTSTRAP TOPIC COUNT TIMEOUT_S
//       reads TOPIC from the beginning in a fresh consumer group and prints
//       KEY<TAB>BASE64(VALUE) per record until COUNT records or TIMEOUT_S seconds.
//
// The integration tests use it to check the documented topic contracts from outside.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Base64;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class ExternalKafkaClient {
  public static void main(String[] args) throws Exception {
    if ((args.length == 4 || args.length == 5) && args[0].equals("produce")) {
      produce(args[1], args[2], args[3], args.length == 5 ? args[4] : null);
    } else if (args.length == 5 && args[0].equals("consume")) {
      consume(args[1], args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]));
    } else {
      System.err.println(
          "usage: produce BOOTSTRAP TOPIC CODEC [commit|abort]"
              + " | consume BOOTSTRAP TOPIC COUNT TIMEOUT_S");
      System.exit(2);
    }
  }

  static void produce(String bootstrap, String topic, String codec, String transaction)
      throws Exception {
    Properties props = new Properties();
    props.put("bootstrap.servers", bootstrap);
    props.put("acks", "all");
    props.put("compression.type", codec);
    props.put("linger.ms", "20"); // several records per compressed batch
    props.put("key.serializer", ByteArraySerializer.class.getName());
    props.put("value.serializer", ByteArraySerializer.class.getName());
    if (transaction != null) {
      props.put("transactional.id", "external-" + UUID.randomUUID());
    }
    int sent = 0;
    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props);
        BufferedReader in =
            new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
      if (transaction != null) {
        producer.initTransactions();
        producer.beginTransaction();
      }
      String line;
      while ((line = in.readLine()) != null) {
        int tab = line.indexOf('\t');
        if (tab < 0) {
          throw new IllegalArgumentException("expected KEY<TAB>VALUE, got: " + line);
        }
        byte[] key = tab == 0 ? null : line.substring(0, tab).getBytes(StandardCharsets.UTF_8);
        byte[] value = line.substring(tab + 1).getBytes(StandardCharsets.UTF_8);
        producer.send(new ProducerRecord<>(topic, key, value));
        sent++;
      }
      producer.flush();
      if ("commit".equals(transaction)) {
        producer.commitTransaction();
      } else if ("abort".equals(transaction)) {
        producer.abortTransaction();
      }
    }
    System.out.println("sent " + sent);
  }

  static void consume(String bootstrap, String topic, int count, int timeoutS) {
    Properties props = new Properties();
    props.put("bootstrap.servers", bootstrap);
    props.put("group.id", "external-" + UUID.randomUUID());
    props.put("auto.offset.reset", "earliest");
    props.put("enable.auto.commit", "false");
    props.put("key.deserializer", ByteArrayDeserializer.class.getName());
    props.put("value.deserializer", ByteArrayDeserializer.class.getName());
    long deadline = System.nanoTime() + timeoutS * 1_000_000_000L;
    int seen = 0;
    Base64.Encoder b64 = Base64.getEncoder();
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
      consumer.subscribe(List.of(topic));
      while (seen < count && System.nanoTime() < deadline) {
        for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
          String key = r.key() == null ? "" : new String(r.key(), StandardCharsets.UTF_8);
          System.out.println(key + "\t" + b64.encodeToString(r.value()));
          seen++;
        }
      }
    }
    System.out.flush();
  }
}
