-- The live rankings' apply step: every key carries the hash tag `{t}` (one
-- Redis Cluster slot). KEYS, ARGV and the reply are described on
-- `TRENDING_SCRIPT` in store.rs, next to this file.
local lkey = KEYS[1]
local okey = KEYS[2]
local field = ARGV[1]
local slice_last = tonumber(ARGV[2])
local nw = tonumber(ARGV[3])
local size = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local bound = tonumber(ARGV[9])
local n = tonumber(ARGV[10])
local ebase = 11 + 2 * nw
local stored = tonumber(redis.call('HGET', okey, field) or '-1')
local ranked = {}
local newest = nil
local added = 0
for e = 0, n - 1 do
  local b = ebase + e * 4
  local off = tonumber(ARGV[b])
  if off > stored then
    added = added + 1
    local w = tonumber(ARGV[6 + tonumber(ARGV[b + 2])])
    if w > 0 then
      local rts = tonumber(ARGV[b + 3])
      if rts > now then rts = now end
      table.insert(ranked, {ARGV[b + 1], w, rts})
      if newest == nil or rts > newest then newest = rts end
    end
  end
end
if newest then
  for j = 0, nw - 1 do
    local name = ARGV[11 + 2 * j]
    local win = tonumber(ARGV[12 + 2 * j])
    local zkey = KEYS[3 + j]
    local landmark = tonumber(redis.call('HGET', lkey, name) or '')
    if not landmark or (newest - landmark) / win > bound then
      if landmark and redis.call('EXISTS', zkey) == 1 then
        local factor = string.format('%.17g', math.exp((landmark - newest) / win))
        redis.call('ZUNIONSTORE', zkey, 1, zkey, 'WEIGHTS', factor)
      end
      landmark = newest
      redis.call('HSET', lkey, name, string.format('%.0f', landmark))
    end
    local inc = {}
    for _, r in ipairs(ranked) do
      inc[r[1]] = (inc[r[1]] or 0) + r[2] * math.exp((r[3] - landmark) / win)
    end
    for item, v in pairs(inc) do
      redis.call('ZINCRBY', zkey, string.format('%.17g', v), item)
    end
    local card = redis.call('ZCARD', zkey)
    if card > size then redis.call('ZREMRANGEBYRANK', zkey, 0, card - size - 1) end
  end
end
if slice_last > stored then redis.call('HSET', okey, field, string.format('%.0f', slice_last)) end
return added
