-- wrk script: replay a file of pre-built GET requests, each used once (the replay cache refuses a
-- signature seen before), split across threads by line number.
--   wrk ... -s bench/wrk_signed.lua http://127.0.0.1:PORT -- REQUESTS_FILE THREADS
-- Each line: PATH<TAB>Name: value<TAB>Name: value ...
-- Prints "BENCH_JSON {...}" with totals, latency percentiles (microseconds) and whether any thread
-- ran out of distinct requests (then it wrapped around and its repeats were replays).

local reqs = {}
local idx = 0
local counter = 0
local wrapped = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  local n = tonumber(args[2])
  local i = 0
  for line in io.lines(args[1]) do
    if i % n == (tid - 1) then
      local path, rest = line:match("^([^\t]*)\t?(.*)$")
      local headers = {}
      for h in rest:gmatch("[^\t]+") do
        local k, v = h:match("^([^:]+): (.*)$")
        headers[k] = v
      end
      reqs[#reqs + 1] = wrk.format("GET", path, headers)
    end
    i = i + 1
  end
end

function request()
  idx = idx + 1
  if idx > #reqs then
    idx = 1
    wrapped = wrapped + 1
  end
  return reqs[idx]
end

function done(summary, latency, requests)
  local wraps = 0
  for _, t in ipairs(threads) do
    wraps = wraps + (t:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "wrapped": %d, "mean_us": %.1f, "p50_us": %d, ' ..
    '"p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout, wraps,
    latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
