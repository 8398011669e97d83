"""The Lua scripts: each runs atomically on the server, so a replayed event has
exactly-once effect (see :mod:`streamrec.stream.redis_store.keys`)."""

from __future__ import annotations

from typing import Final

# ARGV[14]: '' on a single node (the item statistics are updated here, in KEYS[5], the
# trend set, and the co-occurrence sets named from ARGV[12]); on a cluster the id of the
# worker's statistics flush, and KEYS[5] the event's pending-plan key in the user's slot:
# the plan [flush, item, type, weight, previous entries] is stored there and returned
# (also when a replay finds it still there) for
# :mod:`streamrec.stream.redis_store.cluster_stats` to flush.
APPLY: Final = """
local function item_stats(previous)
  local item, weight = ARGV[5], tonumber(ARGV[7])
  local old = redis.call('ZSCORE', KEYS[5], item)
  local score = weight
  if old then  -- log(exp(old) + exp(weight)), as streamrec.engine.serving.item_stats.add_log
    old = tonumber(old)
    local high, low = old, weight
    if weight > old then high, low = weight, old end
    score = high + math.log(1 + math.exp(low - high))
  end
  redis.call('ZADD', KEYS[5], score, item)
  local trend_cap = tonumber(ARGV[11])
  if redis.call('ZCARD', KEYS[5]) > 2 * trend_cap then
    redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -trend_cap - 1)
  end
  local cap, ttl, prefix = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[12]
  local function bump(kind, a, b)
    local key = prefix .. kind .. ':' .. a
    redis.call('ZINCRBY', key, 1, b)
    if redis.call('ZCARD', key) > 2 * cap then redis.call('ZREMRANGEBYRANK', key, 0, -cap - 1) end
    redis.call('EXPIRE', key, ttl)
  end
  -- as streamrec.engine.serving.item_stats.cooccurrence_pairs: distinct others, most recent first
  local buying = ARGV[6] == 'purchase' or ARGV[6] == 'add_to_cart'
  local viewed, bought = {}, {}
  for i = #previous, 1, -1 do
    local entry = cjson.decode(previous[i])
    local other = entry[1]
    if other ~= item then
      if not viewed[other] then
        viewed[other] = true
        bump('v', item, other)
        bump('v', other, item)
      end
      if buying and not bought[other] and (entry[2] == 'purchase' or entry[2] == 'add_to_cart') then
        bought[other] = true
        bump('b', item, other)
        bump('b', other, item)
      end
    end
  end
end

local gone = redis.call('GET', KEYS[7])
if gone and tonumber(ARGV[13]) <= tonumber(gone) then
  return {-1, {}, {}, {}, 1, {}}  -- the user asked to be forgotten after this event
end
local applied, stats, plan = 0, 1, false
local flush = ARGV[14]
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', tonumber(ARGV[4])) then
  local window = tonumber(ARGV[8])
  local previous = {}
  if window > 0 then previous = redis.call('LRANGE', KEYS[1], -window, -1) end
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
  if ARGV[2] ~= '' then redis.call('SADD', KEYS[2], ARGV[2]) end
  redis.call('SADD', KEYS[4], ARGV[5])
  applied = 1
  if flush == '' then
    if not pcall(item_stats, previous) then stats = 0 end
  else  -- a cluster: the statistics are other slots', left to the worker as a plan
    plan = cjson.encode({flush, ARGV[5], ARGV[6], ARGV[7], previous})
    redis.call('SET', KEYS[5], plan, 'EX', tonumber(ARGV[4]))
  end
elseif flush ~= '' then
  plan = redis.call('GET', KEYS[5])  -- not flushed yet: a crash between apply and flush
end
return {applied, redis.call('LRANGE', KEYS[1], 0, -1), redis.call('SMEMBERS', KEYS[2]),
        redis.call('SMEMBERS', KEYS[4]), stats, redis.call('HGETALL', KEYS[6]), plan}
"""

# Store one list and vector unless the user was forgotten after the event behind them,
# and mark that event's dedupe marker (KEYS[5], kept only if it exists, with its TTL)
# ``s:LAST``: LAST is the event whose list the same save call left stored for the user
# (the user's last list of the batch). REPLAYED reads it back.
SAVE: Final = """
local gone = redis.call('GET', KEYS[4])
if gone and tonumber(ARGV[4]) <= tonumber(gone) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('SET', KEYS[5], ARGV[6], 'XX', 'KEEPTTL')
local window = tonumber(ARGV[5])
if window > 0 and #ARGV > 6 then
  for i = 7, #ARGV do redis.call('HINCRBY', KEYS[3], ARGV[i], 1) end
  redis.call('EXPIRE', KEYS[3], window, 'NX')
end
return 1
"""

# What a replayed event (APPLY found its dedupe marker) needs, from its marker (KEYS[1])
# and the user's stored list (KEYS[2]); ARGV[1] is the event id. Only called for
# duplicates, so the JSON decode of the stored list costs nothing in the normal run.
#   {'rank'}               marker '1': applied, no list stored for it (a crash between
#                          the apply and the save, or a copy of an event of this batch)
#   {'rank_only'}          the stored list is the one the event's own save call left, but
#                          it belongs to a later event of that batch: this event's list may
#                          not have been published; rank it again, and keep the newer list
#   {'republish', bytes}   the stored list is this event's own: publish it unchanged
#   {'skip'}               a later save call replaced the list its batch stored, so that
#                          batch was published (the worker publishes a batch before it
#                          takes the next): a newer list exists, publish nothing
# A stored list that is missing (expired) or unreadable falls back to 'rank'.
REPLAYED: Final = """
local marker = redis.call('GET', KEYS[1])
if not marker or string.sub(marker, 1, 2) ~= 's:' then return {'rank'} end
local last = string.sub(marker, 3)
local stored = redis.call('GET', KEYS[2])
if not stored then return {'rank'} end
local ok, list = pcall(cjson.decode, stored)
if not ok or type(list) ~= 'table' or type(list['trigger_event_id']) ~= 'string' then
  return {'rank'}
end
if list['trigger_event_id'] ~= last then return {'skip'} end
if last == ARGV[1] then return {'republish', stored} end
return {'rank_only'}
"""

# The highest members of many sorted sets, with scores, in one call (the item statistics
# of a batch: hundreds of keys; one reply for hiredis to parse instead of one per key).
# KEYS[1] gets ARGV[1] members, the other keys ARGV[2] each; flat [m, s, m, s, ...] replies.
# Raw replies: redis-py's callback for ``withscores=True`` re-encodes every RESP3 score to
# bytes and back, which cost more than the whole state update per event.
TOPS: Final = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = tonumber(i == 1 and ARGV[1] or ARGV[2])
  out[i] = redis.call('ZREVRANGE', key, 0, n - 1, 'WITHSCORES')
end
return out
"""

# One statistics flush into one hash slot of a cluster (see
# streamrec.stream.redis_store.cluster_stats). ARGV[1]: JSON
#   {"ttl": marker TTL, "cap": co-occurrence cap, "co_ttl": its TTL, "trend_cap": cap,
#    "events": [[marker key index, member, ops], ...]}
# where an op is [key index, item] (one more co-occurrence count) or
# [key index, item, weight] (a trend event, log-added as in APPLY). An event's ops run only
# if its member is new in its marker set, so a flush sent again counts each event once.
# Returns how many events were counted.
STATS: Final = """
local spec = cjson.decode(ARGV[1])
local counted, co, trend = 0, {}, {}
for _, event in ipairs(spec.events) do
  local marker = KEYS[event[1]]
  if redis.call('SADD', marker, event[2]) == 1 then
    redis.call('EXPIRE', marker, spec.ttl)
    counted = counted + 1
    for _, op in ipairs(event[3]) do
      local key = KEYS[op[1]]
      if op[3] then
        local weight = tonumber(op[3])
        local old = redis.call('ZSCORE', key, op[2])
        local score = weight
        if old then
          old = tonumber(old)
          local high, low = old, weight
          if weight > old then high, low = weight, old end
          score = high + math.log(1 + math.exp(low - high))
        end
        redis.call('ZADD', key, score, op[2])
        trend[key] = true
      else
        redis.call('ZINCRBY', key, 1, op[2])
        co[key] = true
      end
    end
  end
end
for key in pairs(trend) do
  if redis.call('ZCARD', key) > 2 * spec.trend_cap then
    redis.call('ZREMRANGEBYRANK', key, 0, -spec.trend_cap - 1)
  end
end
for key in pairs(co) do
  if redis.call('ZCARD', key) > 2 * spec.cap then
    redis.call('ZREMRANGEBYRANK', key, 0, -spec.cap - 1)
  end
  redis.call('EXPIRE', key, spec.co_ttl)
end
return counted
"""

# Replace a value only if it is still the one read (KEYS[1] == ARGV[1]), keeping its TTL:
# the reason writer's upgrade of a stored list, which a newer list may have replaced.
CAS: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""
