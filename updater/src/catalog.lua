-- The catalog step: KEYS, ARGV and the reply are described on
-- `CATALOG_SCRIPT` in catalog.rs, next to this file.
local np = tonumber(ARGV[2])
local stored = {}
local lost = {}
for i = 0, np - 1 do
  local b = 3 + i * 3
  local field = ARGV[b]
  local raw = redis.call('HGET', KEYS[1], field)
  local floor = tonumber(ARGV[b + 2])
  if not raw and floor >= 0 and tonumber(ARGV[b + 1]) > floor then
    lost[field] = true
  end
  stored[field] = tonumber(raw or '-1')
end
local rbase = 3 + np * 3
local n = tonumber(ARGV[1])
local applied, stale, dup = 0, 0, 0
local last = {}
local changed = {}
for r = 0, n - 1 do
  local b = rbase + r * 6
  local field = ARGV[b]
  local off = tonumber(ARGV[b + 1])
  if not lost[field] then
    if off <= stored[field] then
      dup = dup + 1
    else
      local item = ARGV[b + 2]
      local key = KEYS[3 + r]
      local ts = tonumber(ARGV[b + 3])
      -- Newest ts wins per field: the fields of one item travel under
      -- separate keys, hence partitions, in no order relative to each
      -- other. A hash written before per-field times has only `ts`.
      local function newer(f)
        local cur = redis.call('HGET', key, f .. '_ts') or redis.call('HGET', key, 'ts')
        return ts >= tonumber(cur or '-1')
      end
      local given, did = false, false
      local av = ARGV[b + 4]
      if av ~= '' then
        given = true
        if newer('available') then
          did = true
          redis.call('HSET', key, 'available', av, 'available_ts', ARGV[b + 3])
          table.insert(changed, item)
          table.insert(changed, av)
          if av == '0' then
            redis.call('SADD', KEYS[2], item)
          else
            redis.call('SREM', KEYS[2], item)
          end
        end
      end
      local rest = ARGV[b + 5]
      if rest ~= '' then
        -- "category|price", either side empty when absent.
        local cat, price = string.match(rest, '^([^|]*)|([^|]*)$')
        if cat and cat ~= '' then
          given = true
          if newer('category') then
            did = true
            redis.call('HSET', key, 'category', cat, 'category_ts', ARGV[b + 3])
          end
        end
        if price and price ~= '' then
          given = true
          if newer('price') then
            did = true
            redis.call('HSET', key, 'price', price, 'price_ts', ARGV[b + 3])
          end
        end
      end
      -- A record of free properties only stores nothing and is not stale.
      if did or not given then
        applied = applied + 1
      else
        stale = stale + 1
      end
      if last[field] == nil or off > last[field] then last[field] = off end
    end
  end
end
for field, off in pairs(last) do
  redis.call('HSET', KEYS[1], field, off)
end
local lostlist = {}
for f, _ in pairs(lost) do table.insert(lostlist, f) end
return {applied, stale, dup, redis.call('SCARD', KEYS[2]), lostlist, changed}
