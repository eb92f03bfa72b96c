//! The store's side of the cluster: Lua scripts, each run atomically by Redis, so that
//! a check and the write it guards cannot be split by another node's.
//!
//! Keys, under the configured prefix P: `P:nodes` (node -> last heartbeat, ms of the
//! store's clock), `P:load:NODE` (`id:resource` -> calls of NODE), `P:calls:NODE`
//! (call -> stored call, for adoption), `P:status` (id -> shared status and
//! capacities), `P:reload` (a counter a reload bumps), `P:addr` (node -> its SIP
//! address), `P:adopted` (dead node -> the node that adopted its calls). Scripts reach keys they
//! compute, which a single Redis (or a primary with replicas) allows; Redis Cluster
//! would need the keys under one hash slot.

/// ARGV: P, me, then `field, capacity` pairs. Counts the call for `me` (1) if every
/// field has room cluster-wide, counting every node that has not been adopted, dead
/// or alive; else changes nothing (0).
pub(crate) const RESERVE: &str = r"
local prefix, me = ARGV[1], ARGV[2]
local nodes = redis.call('HKEYS', prefix .. ':nodes')
local listed = false
for _, n in ipairs(nodes) do if n == me then listed = true end end
if not listed then table.insert(nodes, me) end
for i = 3, #ARGV, 2 do
  local total = 0
  for _, n in ipairs(nodes) do
    total = total + (tonumber(redis.call('HGET', prefix .. ':load:' .. n, ARGV[i])) or 0)
  end
  if total >= tonumber(ARGV[i + 1]) then return 0 end
end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', prefix .. ':load:' .. me, ARGV[i], 1)
end
return 1
";

/// ARGV: P, me, then `field, count` pairs: `me`'s counts become exactly these.
pub(crate) const REWRITE: &str = r"
local key = ARGV[1] .. ':load:' .. ARGV[2]
redis.call('DEL', key)
for i = 3, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
return 1
";

/// ARGV: P, me, my SIP address. The heartbeat: `me` is alive now (and adopted by no
/// one). Returns the store's time, every node with its heartbeat, loads and number of
/// stored calls, the shared statuses, the reload counter, the nodes' addresses and
/// who adopted whom.
pub(crate) const BEAT: &str = r"
local prefix, me = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', prefix .. ':nodes', me, now)
redis.call('HSET', prefix .. ':addr', me, ARGV[3])
redis.call('HDEL', prefix .. ':adopted', me)
local nodes = redis.call('HGETALL', prefix .. ':nodes')
local listed = {}
for i = 1, #nodes, 2 do
  local n = nodes[i]
  table.insert(listed, {n, tonumber(nodes[i + 1]),
    redis.call('HGETALL', prefix .. ':load:' .. n),
    redis.call('HLEN', prefix .. ':calls:' .. n)})
end
return {now, listed, redis.call('HGETALL', prefix .. ':status'),
  tonumber(redis.call('GET', prefix .. ':reload') or '0'),
  redis.call('HGETALL', prefix .. ':addr'), redis.call('HGETALL', prefix .. ':adopted')}
";

/// ARGV: P, me, dead, timeout in ms. If `dead` is still silent for longer than the
/// timeout, `me` takes over its counts and stored calls and `dead` leaves the
/// cluster; returns the calls (key, value, ...). Returns nil when `dead` beat again
/// or another node adopted it first.
pub(crate) const ADOPT: &str = r"
local prefix, me, dead, timeout = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local beat = tonumber(redis.call('HGET', prefix .. ':nodes', dead))
if beat == nil or now - beat <= timeout then return false end
local loads = redis.call('HGETALL', prefix .. ':load:' .. dead)
for i = 1, #loads, 2 do
  redis.call('HINCRBY', prefix .. ':load:' .. me, loads[i], loads[i + 1])
end
local calls = redis.call('HGETALL', prefix .. ':calls:' .. dead)
for i = 1, #calls, 2 do
  redis.call('HSET', prefix .. ':calls:' .. me, calls[i], calls[i + 1])
end
redis.call('DEL', prefix .. ':load:' .. dead, prefix .. ':calls:' .. dead)
redis.call('HDEL', prefix .. ':nodes', dead)
redis.call('HSET', prefix .. ':adopted', dead, me)
return calls
";

/// ARGV: P, me, then fields: one call of `me` fewer on each; a count never goes
/// below zero (a store that lost its data and came back), and a zero is removed.
pub(crate) const RELEASE: &str = r"
local key = ARGV[1] .. ':load:' .. ARGV[2]
for i = 3, #ARGV do
  if redis.call('HINCRBY', key, ARGV[i], -1) <= 0 then redis.call('HDEL', key, ARGV[i]) end
end
return 1
";

/// ARGV: P, me, then fields: one call of `me` more on each, whatever the room.
pub(crate) const INCREMENT: &str = r"
local key = ARGV[1] .. ':load:' .. ARGV[2]
for i = 3, #ARGV do redis.call('HINCRBY', key, ARGV[i], 1) end
return 1
";
