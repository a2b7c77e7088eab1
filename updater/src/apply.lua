-- The updater's apply step for ONE user (one key, so one Redis Cluster slot):
-- KEYS, ARGV and the reply are described on `APPLY_SCRIPT` in store.rs, next
-- to this file.
local key = KEYS[1]
local cap = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local field = ARGV[3]
local n = tonumber(ARGV[4])
local stored = tonumber(redis.call('HGET', key, field) or '-1')
local last = stored
local applied = {}
for e = 0, n - 1 do
  local b = 5 + e * 4
  local off = tonumber(ARGV[b])
  if off > stored then
    local item = ARGV[b + 1]
    local kind = tonumber(ARGV[b + 2])
    local ts = tonumber(ARGV[b + 3])
    local c = {0, 0, 0}
    local cur = redis.call('HGET', key, item)
    if cur then
      local v, a, t, cts = string.match(cur, '^(%d+),(%d+),(%d+),(-?%d+)$')
      if v then
        c = {tonumber(v), tonumber(a), tonumber(t)}
        if tonumber(cts) > ts then ts = tonumber(cts) end
      end
    end
    c[kind + 1] = c[kind + 1] + 1
    redis.call('HSET', key, item, string.format('%d,%d,%d,%.0f', c[1], c[2], c[3], ts))
    table.insert(applied, e)
    if off > last then last = off end
  end
end
if #applied > 0 then
  redis.call('HSET', key, field, string.format('%.0f', last))
  -- Guard fields (`@…`, never an item id) do not count towards the cap; the
  -- one just written is discounted here, others are skipped by the scan.
  -- Eviction goes down to `cap - slack`, so a full history is read, parsed
  -- and sorted once per `slack + 1` new items rather than on every event.
  local slack = math.floor(cap / 16)
  local len = redis.call('HLEN', key)
  if len - 1 > cap then
    local all = redis.call('HGETALL', key)
    local entries = {}
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, 1) ~= '@' then
        local ts = string.match(all[i + 1], ',(-?%d+)$')
        table.insert(entries, {all[i], tonumber(ts) or 0})
      end
    end
    if #entries > cap then
      -- Least recently touched entries go first (ties: lower item id first).
      table.sort(entries, function(a, b)
        if a[2] ~= b[2] then return a[2] < b[2] end
        return a[1] < b[1]
      end)
      for i = 1, #entries - (cap - slack) do redis.call('HDEL', key, entries[i][1]) end
    end
  end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return {applied, redis.call('HGETALL', key)}
