"""stream/worker"""
