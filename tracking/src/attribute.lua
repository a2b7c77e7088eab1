-- Tracking's per-user step: one user's records of a batch against that user's
-- join state, the one key. KEYS, ARGV and the reply are described on
-- `ATTRIBUTE_SCRIPT` in store.rs, next to this file.
local click_ms = tonumber(ARGV[1])
local conv_ms = tonumber(ARGV[2])
local max_imps = tonumber(ARGV[3])
local max_pending = tonumber(ARGV[4])
local grace_ms = tonumber(ARGV[5])
local state_ttl = tonumber(ARGV[6])
local now = tonumber(ARGV[7])
local n_tp = tonumber(ARGV[8])
local longest = math.max(click_ms, conv_ms)

-- Per topic-partition of the batch: the resume point read before the batch.
-- Every record at or below it went through every step (state, counters), so
-- it is skipped, and its deltas no longer need keeping.
local floor = {}
for t = 1, n_tp do
  floor[ARGV[8 + 2 * t - 1]] = tonumber(ARGV[8 + 2 * t])
end
local n_rec = tonumber(ARGV[9 + 2 * n_tp])
local base = 9 + 2 * n_tp

local s
local raw = redis.call('GET', KEYS[1])
if raw then
  -- MessagePack (JSON costs 1.7 × as much to decode and re-encode); '{' is a JSON state written
  -- by an earlier version, still read.
  local decode = cmsgpack.unpack
  if string.byte(raw, 1) == 123 then decode = cjson.decode end
  local ok, v = pcall(decode, raw)
  -- Something else wrote the key: start over rather than fail every retry.
  if ok and type(v) == 'table' then s = v end
end
if not s then s = {} end
if type(s.l) ~= 'number' then s.l = 0 end
if type(s.i) ~= 'table' then s.i = {} end
if type(s.e) ~= 'table' then s.e = {} end
if type(s.x) ~= 'table' then s.x = {} end
-- g: topic-partition → offset of the last record of it applied to this state.
if type(s.g) ~= 'table' then s.g = {} end
-- o: the counter deltas of applied records whose counter step may not have
-- run yet ({q = topic-partition, o = offset, d = rows}), reported again on a replay.
if type(s.o) ~= 'table' then s.o = {} end

-- The deltas of the record being applied: rows {variant, version, hour, 5 counters}.
local cur, cur_rows
local function bump(imp, field, amount)
  local k = imp.v .. ':' .. imp.m .. ':' .. string.format('%d', math.floor(imp.t / 3600000))
  local row = cur[k]
  if not row then
    row = {imp.v, imp.m, string.format('%d', math.floor(imp.t / 3600000)), 0, 0, 0, 0, 0}
    cur[k] = row
    table.insert(cur_rows, row)
  end
  row[field + 1] = row[field + 1] + amount
end

local function window(kind)
  if kind == 'v' then return click_ms end
  return conv_ms
end

local function has_item(imp, item)
  return string.find(imp.s, ',' .. item .. ',', 1, true) ~= nil
end

local function counted(tx)
  for _, k in ipairs(s.x) do
    if k == tx then return true end
  end
  return false
end

-- Each impression counts at most once per outcome; a transaction's revenue
-- counts once per user (to the first impression credited with it).
-- Fields: 3 impressions, 4 clicks, 5 carts, 6 purchases, 7 revenue.
local function credit(imp, kind, rev, tx)
  if kind == 'v' then
    if imp.c ~= 1 then imp.c = 1; bump(imp, 4, 1) end
  elseif kind == 'a' then
    if imp.a ~= 1 then imp.a = 1; bump(imp, 5, 1) end
  else
    if imp.p ~= 1 then imp.p = 1; bump(imp, 6, 1) end
    if rev ~= '' and not counted(tx) then
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

local function impression(rec, ts, variant, version, items)
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
      credit(imp, e.k, e.v, e.x)
      if e.m ~= 1 then late = late + 1 end
      e.m = 1
    end
  end
end

local function event(kind, ts, item, rec, rev, tx)
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
  for _, imp in ipairs(hits) do credit(imp, kind, rev, tx) end
  if #hits > 0 then on_event = on_event + 1 else buffered = buffered + 1 end
  -- Kept for the grace (processing time) for impressions read after it, so
  -- the result does not depend on how the two topics interleave.
  if max_pending > 0 then
    table.insert(s.e, {t = ts, k = kind, i = item, r = rec, v = rev, x = tx, w = now, m = (#hits > 0) and 1 or 0})
  end
end

-- The outbox entry of (tp, offset), if kept.
local function kept(tp, off)
  for _, b in ipairs(s.o) do
    if b.q == tp and b.o == off then return b end
  end
  return nil
end

local out = {}
local function report(tp, off, rows)
  for _, r in ipairs(rows) do
    table.insert(out, {tp, string.format('%.0f', off), r[1], r[2], r[3], r[4], r[5], r[6], r[7], string.format('%.17g', r[8])})
  end
end

local changed = false
for r = 0, n_rec - 1 do
  local b = base + r * 9
  local typ = ARGV[b + 1]
  local tp = ARGV[b + 2]
  local off = tonumber(ARGV[b + 3])
  local fl = floor[tp] or -1
  local g = tonumber(s.g[tp]) or -1
  if off <= fl then
    -- done before this batch, every step of it
    if typ == 'i' then dup_i = dup_i + 1 else dup_e = dup_e + 1 end
  else
    if typ == 'i' then applied_i = applied_i + 1 else applied_e = applied_e + 1 end
    if off <= g then
      -- In this state already (a run that stopped before the counters or the
      -- resume point moved): its deltas again, for the counter step to decide.
      local k = kept(tp, off)
      if k then report(tp, off, k.d) end
    else
      changed = true
      s.g[tp] = off
      cur, cur_rows = {}, {}
      local ts = tonumber(ARGV[b + 4])
      if typ == 'i' then
        impression(ARGV[b + 5], ts, ARGV[b + 6], ARGV[b + 7], ARGV[b + 8])
      else
        event(ARGV[b + 5], ts, ARGV[b + 6], ARGV[b + 7], ARGV[b + 8], ARGV[b + 9])
      end
      if #cur_rows > 0 then
        table.insert(s.o, {q = tp, o = off, d = cur_rows})
        report(tp, off, cur_rows)
      end
    end
  end
end

-- Deltas at or below their partition's resume point are in the counters.
local box = {}
for _, b in ipairs(s.o) do
  local fl = floor[b.q]
  if fl and b.o <= fl then changed = true else table.insert(box, b) end
end
s.o = box

if changed then
  -- Bounded state: drop what no future event can match, then cap.
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
  s.i = imps
  s.e = evs
  -- Kept even when no impression or event is left: the guards must outlive
  -- any replay of the records they cover (the TTL is a day and more).
  redis.call('SET', KEYS[1], cmsgpack.pack(s), 'EX', state_ttl)
end

return {applied_i, dup_i, applied_e, dup_e, on_event, late, buffered, expired, out}
