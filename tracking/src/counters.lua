-- Tracking's counter step: a batch's counter deltas into the `stats:{s}` hashes
-- under their own per-partition guard. KEYS, ARGV and the reply are described
-- on `COUNTERS_SCRIPT` in store.rs, next to this file.
local hourly_ttl = tonumber(ARGV[1])
local n_tp = tonumber(ARGV[2])
local n_keys = tonumber(ARGV[3])
local n_rows = tonumber(ARGV[4])

local guard, last = {}, {}
for t = 1, n_tp do
  local field = ARGV[4 + 2 * t - 1]
  guard[t] = tonumber(redis.call('HGET', KEYS[1], field) or '-1')
  last[t] = tonumber(ARGV[4 + 2 * t])
end

-- Sums per counter key (KEYS numbering) of the rows above their guard.
local sums, order = {}, {}
local function add(k, b)
  local c = sums[k]
  if not c then
    c = {0, 0, 0, 0, 0}
    sums[k] = c
    table.insert(order, k)
  end
  for f = 1, 4 do c[f] = c[f] + tonumber(ARGV[b + 4 + f]) end
  c[5] = c[5] + tonumber(ARGV[b + 9])
end

local base = 4 + 2 * n_tp
for r = 0, n_rows - 1 do
  local b = base + r * 9
  local t = tonumber(ARGV[b + 1])
  if tonumber(ARGV[b + 2]) > guard[t] then
    add(tonumber(ARGV[b + 3]), b)
    add(tonumber(ARGV[b + 4]), b)
  end
end

-- schemas::stats::COUNTER_FIELDS, in that order (a test in store.rs holds them equal).
local names = {'impressions', 'clicks', 'carts', 'purchases'}
local out = {}
for _, k in ipairs(order) do
  local c = sums[k]
  local key = KEYS[k]
  for f = 1, 4 do
    if c[f] ~= 0 then redis.call('HINCRBY', key, names[f], c[f]) end
  end
  local rev = string.format('%.17g', c[5])
  if c[5] ~= 0 then redis.call('HINCRBYFLOAT', key, 'revenue', rev) end
  if k <= 2 + n_keys then
    -- a total of an arm and model version
    redis.call('SADD', KEYS[2], key)
    table.insert(out, {k, c[1], c[2], c[3], c[4], rev})
  else
    redis.call('EXPIRE', key, hourly_ttl)
  end
end

for t = 1, n_tp do
  if last[t] > guard[t] then redis.call('HSET', KEYS[1], ARGV[4 + 2 * t - 1], string.format('%.0f', last[t])) end
end
return out
