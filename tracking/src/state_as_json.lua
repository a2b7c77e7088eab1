-- One `track:{user}` state as JSON (`read_state` in store.rs).
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
if string.byte(raw, 1) == 123 then return raw end
return cjson.encode(cmsgpack.unpack(raw))
