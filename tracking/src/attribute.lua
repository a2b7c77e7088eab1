-- Tracking's attribution step: KEYS, ARGV and the reply are described on
-- `ATTRIBUTE_SCRIPT` in store.rs, next to this file.
local prefix = ARGV[1]
local click_ms = tonumber(ARGV[2])
local conv_ms = tonumber(ARGV[3])
local max_imps = tonumber(ARGV[4])
local max_pending = tonumber(ARGV[5])
local grace_ms = tonumber(ARGV[6])
local state_ttl = tonumber(ARGV[7])
local hourly_ttl = tonumber(ARGV[8])
local n_off = tonumber(ARGV[9])
local n_users = tonumber(ARGV[10])
local n_rec = tonumber(ARGV[11])
local now = tonumber(ARGV[12])
local longest = math.max(click_ms, conv_ms)

-- A partition with no stored offset whose batch starts past the start of its
-- log has lost its state (Redis restarted empty, or flushed): none of its
-- records are applied, and the caller re-reads it from the log start.
local stored, initial, lost, lost_list = {}, {}, {}, {}
for o = 1, n_off do
  local raw = redis.call('GET', KEYS[o])
  stored[o] = tonumber(raw or '-1')
  initial[o] = stored[o]
  local floor = tonumber(ARGV[12 + n_off + 2 * o - 1])
  local first = tonumber(ARGV[12 + n_off + 2 * o])
  if not raw and floor >= 0 and first > floor then
    lost[o] = true
    table.insert(lost_list, o)
  end
end

local states = {}
local function state(u)
  local s = states[u]
  if s then return s end
  local raw = redis.call('GET', KEYS[n_off + u])
  if raw then
    -- MessagePack (JSON costs 1.7 × as much to decode and re-encode); '{' is a JSON state written
    -- by an earlier version, still read.
    local decode = cmsgpack.unpack
    if string.byte(raw, 1) == 123 then decode = cjson.decode end
    local ok, v = pcall(decode, raw)
    -- Something else wrote the key: start over rather than fail every retry.
    if ok and type(v) == 'table' then s = v end
  end
  if not s then s = {l = 0, i = {}, e = {}, x = {}} end
  if type(s.l) ~= 'number' then s.l = 0 end
  if type(s.i) ~= 'table' then s.i = {} end
  if type(s.e) ~= 'table' then s.e = {} end
  if type(s.x) ~= 'table' then s.x = {} end
  states[u] = s
  return s
end

-- Counter deltas: totals per variant and model version, and per hour.
local totals, order, hourly, horder = {}, {}, {}, {}
local function bump(imp, field, amount)
  local k = imp.v .. ':' .. imp.m
  local c = totals[k]
  if not c then
    c = {imp.v, imp.m, 0, 0, 0, 0, 0}
    totals[k] = c
    table.insert(order, k)
  end
  c[field] = c[field] + amount
  local hk = k .. ':' .. string.format('%d', math.floor(imp.t / 3600000))
  local h = hourly[hk]
  if not h then
    h = {hk, 0, 0, 0, 0, 0}
    hourly[hk] = h
    table.insert(horder, hk)
  end
  h[field - 1] = h[field - 1] + amount
end

local function window(kind)
  if kind == 'v' then return click_ms end
  return conv_ms
end

local function has_item(imp, item)
  return string.find(imp.s, ',' .. item .. ',', 1, true) ~= nil
end

local function counted(s, tx)
  for _, k in ipairs(s.x) do
    if k == tx then return true end
  end
  return false
end

-- Each impression counts at most once per outcome; a transaction's revenue
-- counts once per user (to the first impression credited with it).
local function credit(s, imp, kind, rev, tx)
  if kind == 'v' then
    if imp.c ~= 1 then imp.c = 1; bump(imp, 4, 1) end
  elseif kind == 'a' then
    if imp.a ~= 1 then imp.a = 1; bump(imp, 5, 1) end
  else
    if imp.p ~= 1 then imp.p = 1; bump(imp, 6, 1) end
    if rev ~= '' and not counted(s, tx) then
      table.insert(s.x, tx)
      bump(imp, 7, tonumber(rev))
    end
  end
end

-- Does event e belong to impression imp? Its rec_id if it has one (direct
-- attribution), else the item; and in the outcome's window either way.
local function matches(imp, kind, ts, item, rec)
  if ts < imp.t or ts > imp.t + window(kind) then return false end
  if rec ~= '' then return imp.r == rec end
  return has_item(imp, item)
end

local applied_i, dup_i, applied_e, dup_e = 0, 0, 0, 0
local on_event, late, buffered, expired = 0, 0, 0, 0

local function impression(s, rec, ts, variant, version, items)
  -- Only impressions (the API's clock) move the user's clock: a storefront
  -- clock running ahead must not expire impressions.
  if ts > s.l then s.l = ts end
  for _, imp in ipairs(s.i) do
    if imp.r == rec then return end -- the same response twice: one impression
  end
  local imp = {r = rec, t = ts, v = variant, m = version, s = ',' .. items .. ',', c = 0, a = 0, p = 0}
  table.insert(s.i, imp)
  bump(imp, 3, 1)
  -- Recent events, including those read before this impression (the topics interleave).
  for _, e in ipairs(s.e) do
    if matches(imp, e.k, e.t, e.i, e.r) then
      credit(s, imp, e.k, e.v, e.x)
      if e.m ~= 1 then late = late + 1 end
      e.m = 1
    end
  end
end

local function event(s, kind, ts, item, rec, rev, tx)
  -- Every impression of the user the event belongs to, latest first (so
  -- revenue goes to the most recent one).
  local hits = {}
  for _, imp in ipairs(s.i) do
    if matches(imp, kind, ts, item, rec) then table.insert(hits, imp) end
  end
  table.sort(hits, function(a, b)
    if a.t ~= b.t then return a.t > b.t end
    return a.r > b.r
  end)
  for _, imp in ipairs(hits) do credit(s, imp, kind, rev, tx) end
  if #hits > 0 then on_event = on_event + 1 else buffered = buffered + 1 end
  -- Kept for the grace (processing time) for impressions read after it, so
  -- the result does not depend on how the two topics interleave.
  if max_pending > 0 then
    table.insert(s.e, {t = ts, k = kind, i = item, r = rec, v = rev, x = tx, w = now, m = (#hits > 0) and 1 or 0})
  end
end

local base = 12 + 3 * n_off
for r = 0, n_rec - 1 do
  local b = base + r * 10
  local o = tonumber(ARGV[b + 2])
  local off = tonumber(ARGV[b + 3])
  local typ = ARGV[b + 1]
  if lost[o] then
    -- read again from the log start
  elseif off <= stored[o] then
    if typ == 'i' then dup_i = dup_i + 1 else dup_e = dup_e + 1 end
  else
    stored[o] = off
    local s = state(tonumber(ARGV[b + 4]))
    local ts = tonumber(ARGV[b + 5])
    if typ == 'i' then
      impression(s, ARGV[b + 6], ts, ARGV[b + 7], ARGV[b + 8], ARGV[b + 9])
      applied_i = applied_i + 1
    else
      event(s, ARGV[b + 6], ts, ARGV[b + 7], ARGV[b + 8], ARGV[b + 9], ARGV[b + 10])
      applied_e = applied_e + 1
    end
  end
end

-- Bounded state: drop what no future event can match, then cap.
for u, s in pairs(states) do
  local imps = {}
  for _, imp in ipairs(s.i) do
    if imp.t >= s.l - longest then table.insert(imps, imp) end
  end
  table.sort(imps, function(a, b)
    if a.t ~= b.t then return a.t < b.t end
    return a.r < b.r
  end)
  while #imps > max_imps do table.remove(imps, 1) end
  local evs = {}
  for _, e in ipairs(s.e) do
    if (tonumber(e.w) or 0) >= now - grace_ms then
      table.insert(evs, e)
    elseif e.m ~= 1 then
      expired = expired + 1
    end
  end
  while #evs > max_pending do
    if evs[1].m ~= 1 then expired = expired + 1 end
    table.remove(evs, 1)
  end
  while #s.x > 64 do table.remove(s.x, 1) end
  if #imps == 0 and #evs == 0 then
    redis.call('DEL', KEYS[n_off + u])
  else
    s.i = imps
    s.e = evs
    redis.call('SET', KEYS[n_off + u], cmsgpack.pack(s), 'EX', state_ttl)
  end
end

-- schemas::stats::COUNTER_FIELDS, in that order (a test in store.rs holds them equal).
local names = {'impressions', 'clicks', 'carts', 'purchases'}
local out = {}
for _, k in ipairs(order) do
  local c = totals[k]
  local key = prefix .. 'stats:' .. k
  for f = 1, 4 do
    if c[f + 2] ~= 0 then redis.call('HINCRBY', key, names[f], c[f + 2]) end
  end
  local rev = string.format('%.17g', c[7])
  if c[7] ~= 0 then redis.call('HINCRBYFLOAT', key, 'revenue', rev) end
  redis.call('SADD', prefix .. 'stats_index', key)
  table.insert(out, {c[1], c[2], c[3], c[4], c[5], c[6], rev})
end
for _, hk in ipairs(horder) do
  local h = hourly[hk]
  local key = prefix .. 'stats_hourly:' .. hk
  for f = 1, 4 do
    if h[f + 1] ~= 0 then redis.call('HINCRBY', key, names[f], h[f + 1]) end
  end
  if h[6] ~= 0 then redis.call('HINCRBYFLOAT', key, 'revenue', string.format('%.17g', h[6])) end
  redis.call('EXPIRE', key, hourly_ttl)
end

for o = 1, n_off do
  local mx = tonumber(ARGV[12 + o])
  if mx > stored[o] then stored[o] = mx end
  if not lost[o] and stored[o] > initial[o] then redis.call('SET', KEYS[o], string.format('%.0f', stored[o])) end
end
return {applied_i, dup_i, applied_e, dup_e, on_event, late, buffered, expired, out, lost_list}
