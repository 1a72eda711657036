//! The Lua scripts that change a breaker's hash. Each touches one key,
//! `KEYS[1]`, so a breaker's state is Cluster-safe, and each is atomic.
//!
//! The hash's fields: `state` (`closed`, `open`, `half_open`,
//! `forced_open`, `forced_closed`), `until` (the end of an open period, Unix
//! milliseconds), `cause`, `ver` (grows with every write of the state, and across a flush: at
//! least the server's clock in milliseconds), `origin` (the
//! replica that wrote it), `fails` (the fleet's consecutive failures), and
//! one `p:<lease>` per half-open probe in flight, holding its expiry. Every
//! write sets the key's TTL.
//!
//! A breaker with a `failure_rate_threshold` also keeps the fleet's
//! failure-rate window in its hash, so it stays one key: `wsize` (the
//! window's size, in outcomes), `wn` (the ring slot the next outcome
//! takes), `wl` (outcomes held, at most `wsize`) and `wf` (failures held),
//! plus one `w:<slot>` per failure the ring holds. A success is only the
//! absence of its slot's field, so a window costs memory by its failures,
//! and pushing successes past a window with no failure costs nothing per
//! outcome. Every transition empties the window: it counts closed-state
//! outcomes, from the moment the circuit last closed.
//!
//! A state change is published on the channel as
//! `kind|ver|state|until|cause|origin|fails|wl|wf|name` (`kind` is `s` for
//! a state, `f` for a failure count); the name comes last, so it may hold
//! `|`.

/// The time on the server, in Unix milliseconds, and the helpers the
/// scripts share.
const PRELUDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function get(f, d) local v = redis.call('HGET', KEYS[1], f); if v then return v end; return d end
local function publish(kind, channel, name)
  local h = redis.call('HMGET', KEYS[1], 'ver', 'state', 'until', 'cause', 'origin', 'fails', 'wl', 'wf')
  redis.call('PUBLISH', channel, kind .. '|' .. (h[1] or '0') .. '|' .. (h[2] or 'closed') .. '|' .. (h[3] or '0') .. '|' .. (h[4] or '') .. '|' .. (h[5] or '') .. '|' .. (h[6] or '0') .. '|' .. (h[7] or '0') .. '|' .. (h[8] or '0') .. '|' .. name)
end
local function reply(outcome)
  local h = redis.call('HMGET', KEYS[1], 'ver', 'state', 'until', 'cause', 'fails', 'wl', 'wf')
  return {h[1] or '0', h[2] or 'closed', h[3] or '0', h[4] or '', h[5] or '0', h[6] or '0', h[7] or '0', outcome}
end
-- Deletes every field whose name starts with one of `prefixes`.
local function clear_fields(prefixes)
  local fields = redis.call('HKEYS', KEYS[1])
  for _, f in ipairs(fields) do
    if prefixes[string.sub(f, 1, 2)] then redis.call('HDEL', KEYS[1], f) end
  end
end
-- Keeps an idle key for `ttl` ms from now, or longer if it was set longer.
local function touch(ttl)
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
end
-- Pushes `successes` successes, then a failure if `failed`, into the
-- failure-rate window of `size` outcomes; returns the outcomes and the
-- failures it then holds.
local function push_window(successes, failed, size)
  if tonumber(get('wsize', '0')) ~= size then
    -- The first outcome, or a replica configured with another size: the
    -- ring's slots mean nothing at this size, so it starts empty.
    clear_fields({['w:'] = true})
    redis.call('HSET', KEYS[1], 'wsize', size, 'wn', 0, 'wl', 0, 'wf', 0)
  end
  local nxt, len, wf = tonumber(get('wn', '0')), tonumber(get('wl', '0')), tonumber(get('wf', '0'))
  if successes > 0 then
    if wf > 0 and successes >= size then
      clear_fields({['w:'] = true})
      wf = 0
    elseif wf > 0 then
      -- The successes overwrite slots nxt .. nxt + successes - 1 (mod
      -- size); a failure held there leaves the window.
      local fields = redis.call('HKEYS', KEYS[1])
      for _, f in ipairs(fields) do
        if string.sub(f, 1, 2) == 'w:' and (tonumber(string.sub(f, 3)) - nxt) % size < successes then
          redis.call('HDEL', KEYS[1], f)
          wf = wf - 1
        end
      end
    end
    nxt = (nxt + successes) % size
    len = math.min(len + successes, size)
  end
  if failed then
    if redis.call('HSETNX', KEYS[1], 'w:' .. nxt, 1) == 1 then wf = wf + 1 end
    nxt = (nxt + 1) % size
    len = math.min(len + 1, size)
  end
  redis.call('HSET', KEYS[1], 'wn', nxt, 'wl', len, 'wf', wf)
  return len, wf
end
local function write(state, untl, cause, origin, ttl, channel, name)
  -- Versions grow across a flush: never below the server's clock in ms.
  local ver = math.max(tonumber(get('ver', '0')) + 1, now)
  redis.call('HSET', KEYS[1], 'ver', string.format('%d', ver))
  -- Leases are for this period's probes; the window counts from the
  -- circuit's last closing.
  clear_fields({['p:'] = true, ['w:'] = true})
  redis.call('HSET', KEYS[1], 'state', state, 'until', untl, 'cause', cause, 'origin', origin, 'fails', 0, 'wn', 0, 'wl', 0, 'wf', 0)
  local keep = ttl
  if tonumber(untl) > now then keep = keep + (tonumber(untl) - now) end
  redis.call('PEXPIRE', KEYS[1], keep)
  publish('s', channel, name)
end
";

/// A transition made by one replica.
/// ARGV: channel, name, origin, state, until, cause, ttl, manual (`1`/`0`).
/// An automatic transition never overrides a forced state, and never
/// leaves an open period another replica started and that has not ended.
pub(crate) const TRANSITION: &str = r"
local channel, name, origin, state, untl, cause, ttl, manual = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local cur = get('state', 'closed')
local cur_until = tonumber(get('until', '0'))
if manual == '0' then
  if cur == 'forced_open' or cur == 'forced_closed' then return reply('kept') end
  if cur == 'open' and cur_until > now and state ~= 'open' then return reply('kept') end
  if cur == 'open' and state == 'open' and cur_until >= tonumber(untl) then return reply('kept') end
  if cur == state and state ~= 'open' then return reply('kept') end
end
write(state, untl, cause, origin, ttl, channel, name)
return reply('set')
";

/// A failure while closed: counts it, and trips the fleet at the threshold.
/// With a failure-rate window (`rate` not empty), first pushes the
/// replica's `successes` not yet pushed, then the failure, and trips the
/// fleet when the window's rate reaches `rate` over at least `minimum`
/// outcomes; the count's trip goes first, as in a single process.
/// ARGV: channel, name, origin, threshold, recovery (ms), ttl, successes,
/// window size, minimum, rate.
pub(crate) const FAILURE: &str = r"
local channel, name, origin, threshold, recovery, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local successes, size, minimum, rate = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local cur = get('state', 'closed')
if cur ~= 'closed' then return reply('kept') end
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
local rate_tripped = false
if rate ~= '' then
  local len, wf = push_window(successes, true, size)
  rate_tripped = len >= minimum and wf / len >= tonumber(rate)
end
-- Tripped by the fleet, not by a replica: every replica takes it on.
if fails >= threshold then
  write('open', tostring(now + recovery), 'failure_threshold', 'fleet', ttl, channel, name)
  return reply('tripped')
end
if rate_tripped then
  write('open', tostring(now + recovery), 'failure_rate', 'fleet', ttl, channel, name)
  return reply('tripped')
end
touch(ttl)
publish('f', channel, name)
return reply('counted')
";

/// Closed-state successes of one replica, pushed into the failure-rate
/// window in a batch; dropped when the circuit is no longer closed (they
/// were admitted before the replica heard of the trip). Not published:
/// a success changes no replica's decision until the next failure.
/// ARGV: successes, window size, ttl.
pub(crate) const OUTCOMES: &str = r"
local successes, size, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if get('state', 'closed') ~= 'closed' then return reply('counted') end
push_window(successes, false, size)
touch(ttl)
return reply('counted')
";

/// A success that cleared a replica's failure count clears the fleet's.
/// ARGV: channel, name.
pub(crate) const SUCCESS: &str = r"
if tonumber(get('fails', '0')) > 0 then
  redis.call('HSET', KEYS[1], 'fails', 0)
  publish('f', ARGV[1], ARGV[2])
end
return reply('counted')
";

/// Leases a half-open probe slot: `1` if granted, `0` if the fleet's slots
/// are taken or another replica has reopened the circuit.
/// ARGV: lease id, max probes, lease ttl (ms), key ttl (ms).
pub(crate) const LEASE: &str = r"
local id, max, lease_ttl, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local cur = get('state', 'closed')
if cur == 'forced_open' or (cur == 'open' and tonumber(get('until', '0')) > now) then return 0 end
local held = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local f = fields[i]
  if string.sub(f, 1, 2) == 'p:' then
    if tonumber(fields[i + 1]) <= now then redis.call('HDEL', KEYS[1], f) else held = held + 1 end
  end
end
if held >= max then return 0 end
redis.call('HSET', KEYS[1], 'p:' .. id, now + lease_ttl)
if redis.call('PTTL', KEYS[1]) < lease_ttl + ttl then redis.call('PEXPIRE', KEYS[1], lease_ttl + ttl) end
return 1
";

/// The periodic resync and the merge after a reconnection. Rebuilds a
/// missing key from this replica's state when that state is not closed;
/// with `dirty` (this replica changed state while it could not write),
/// a local open period the hash does not hold wins: open anywhere stays
/// open. Returns the hash as it is afterwards.
/// ARGV: channel, name, origin, local state, local until, ttl, dirty.
pub(crate) const SYNC: &str = r"
local channel, name, origin, state, untl, ttl, dirty = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
if redis.call('EXISTS', KEYS[1]) == 0 then
  if state == 'open' or state == 'forced_open' or state == 'forced_closed' then
    write(state, untl, 'manual', origin, ttl, channel, name)
    return reply('rebuilt')
  end
  return reply('empty')
end
local cur = get('state', 'closed')
local cur_until = tonumber(get('until', '0'))
if dirty == '1' and state == 'open' and tonumber(untl) > now and cur ~= 'forced_open' and cur ~= 'forced_closed' and (cur ~= 'open' or cur_until < tonumber(untl)) then
  write(state, untl, 'failure_threshold', origin, ttl, channel, name)
  return reply('merged')
end
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return reply('read')
";

/// `script` with the shared prelude.
pub(crate) fn with_prelude(script: &str) -> String {
    format!("{PRELUDE}\n{script}")
}
