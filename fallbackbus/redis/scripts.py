"""Lua scripts for the replay's atomic steps. Each runs atomically inside Redis, so no other
worker or publisher can observe (or interleave with) a half-done claim or recovery.

Lists are LPUSHed by the buses, so the oldest entry is at the right (tail) end.
"""

from __future__ import annotations

# KEYS: source, stats   ARGV: k, then k (counter field, increment) pairs, then the entries
# Store entries and move their fell_back counters in one atomic step (and one round trip), so
# fell back = republished + dead-lettered + waiting holds at every instant.
STORE = """
local k = tonumber(ARGV[1])
for i = 0, k - 1 do
  redis.call('HINCRBY', KEYS[2], ARGV[2 + 2 * i], ARGV[3 + 2 * i])
end
local first = 2 + 2 * k
for i = first, #ARGV, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return #ARGV - first + 1
"""

# KEYS: source, processing, leases   ARGV: count, run_id, lease_seconds
# Move up to `count` entries from the source's tail into this run's processing list, keeping
# their order, and (re)arm the run's lease, in one step: an entry is always in exactly one list.
CLAIM = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[2])
local n = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], -n, -1)
if #items == 0 then return items end
redis.call('LTRIM', KEYS[1], 0, -(#items + 1))
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
end
return items
"""

# KEYS: source, processing, leases   ARGV: run_id
# Give a crashed run's entries back to the source's oldest end in their original order, but only
# if its lease has really expired (a live run renews it every batch).
RECOVER = """
local now = tonumber(redis.call('TIME')[1])
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[1])
if deadline and tonumber(deadline) > now then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('ZREM', KEYS[3], ARGV[1])
return moved
"""

# KEYS: leases   ARGV: (none) -> run ids whose lease has expired
EXPIRED = """
local now = tonumber(redis.call('TIME')[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
"""

# KEYS: dead, source, stats
# ARGV: groups of four: a dead-letter entry, the LREM direction (1 searches from the head, -1
# from the tail, whichever is nearer), the entry to push back onto the source's oldest end ('' for
# none), and the counters to move as a JSON object.
# One script, so an entry leaves the dead letters, joins the source and moves the counters all at
# once or not at all; an entry that is already gone (another operator was faster) moves nothing.
MOVE_DEAD_LETTERS = """
local moved = {}
for i = 1, #ARGV, 4 do
  if redis.call('LREM', KEYS[1], tonumber(ARGV[i + 1]), ARGV[i]) == 1 then
    if ARGV[i + 2] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[i + 2]) end
    for counter, delta in pairs(cjson.decode(ARGV[i + 3])) do
      redis.call('HINCRBY', KEYS[3], counter, delta)
    end
    moved[#moved + 1] = (i + 3) / 4
  end
end
return moved
"""
