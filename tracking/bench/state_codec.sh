#!/usr/bin/env bash
# What one user's join state costs the attribution script inside Redis: 150
# states of ~300 bytes per script call, each part on its own (GET + SET EX from
# Lua, cjson decode, cjson decode + encode, cmsgpack unpack, cmsgpack pack +
# unpack). Prints µs per state from `INFO commandstats` (Redis time only).
# Writes keys rtbench:* (deleted at the end) on REDIS_PORT (6379).
#
#   tracking/bench/state_codec.sh
set -euo pipefail
port=${REDIS_PORT:-6379}
n=150
rc() { redis-cli -p "$port" "$@"; }
state='{"l":1764000000000,"i":[{"r":"r1","t":1764000000000,"v":"als","m":"v1","s":",1,2,3,4,5,6,7,8,9,10,","c":0,"a":0,"p":0}],"e":[{"t":1764000000001,"k":"v","i":"7","r":"","v":"","x":"","w":1764000000123,"m":0},{"t":1764000000002,"k":"v","i":"8","r":"","v":"","x":"","w":1764000000124,"m":1}],"x":[]}'
for i in $(seq "$n"); do rc set "rtbench:$i" "$state" >/dev/null; done
script='
local n, mode = tonumber(ARGV[1]), ARGV[2]
local raw0 = redis.call("GET", "rtbench:1")
local packed = cmsgpack.pack(cjson.decode(raw0))
for i = 1, n do
  local k = "rtbench:" .. i
  if mode == "get+set" then redis.call("SET", k, redis.call("GET", k), "EX", 3600)
  elseif mode == "cjson-decode" then cjson.decode(raw0)
  elseif mode == "cjson-both" then cjson.encode(cjson.decode(raw0))
  elseif mode == "msgpack-unpack" then cmsgpack.unpack(packed)
  elseif mode == "msgpack-both" then cmsgpack.pack(cmsgpack.unpack(packed))
  end
end
return #packed'
printf 'state: %d bytes as JSON, %d as MessagePack\n' "${#state}" "$(rc eval "$script" 0 1 none)"
for mode in none get+set cjson-decode cjson-both msgpack-unpack msgpack-both; do
    rc config resetstat >/dev/null
    for _ in $(seq 20); do rc eval "$script" 0 "$n" "$mode" >/dev/null; done
    usec=$(rc info commandstats | sed -n 's/^cmdstat_eval:calls=[0-9]*,usec=\([0-9]*\),.*/\1/p')
    printf '%-15s %6.2f µs per state\n' "$mode" "$(echo "$usec / (20 * $n)" | bc -l)"
done
rc eval 'for i = 1, tonumber(ARGV[1]) do redis.call("DEL", "rtbench:" .. i) end' 0 "$n" >/dev/null
