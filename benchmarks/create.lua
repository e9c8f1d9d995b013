-- POST /api/v1/accounts. MODE=new: a fresh Idempotency-Key and reference_id per request;
-- MODE=same: one key for every request (replays); MODE=bad: an invalid body, one key
-- per wrk thread (the 400 is recorded once, then replayed).
-- Every answer's status is counted per thread and printed at the end ("status 201: N"),
-- so a row whose answers are not what it claims to measure shows it.
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end
function init(args)
  api_key = os.getenv("API_KEY") or ""
  mode = os.getenv("MODE") or "new"
  statuses = {}
  math.randomseed(os.time() + id)
end
request = function()
  counter = counter + 1
  local key = id .. "-" .. counter .. "-" .. math.random(1, 1000000000)
  local body = '{"data":{"attributes":{"name_first":"Ada","reference_id":"r' .. key .. '"}}}'
  if mode == "same" then
    key = "bench-replay"
    body = '{"data":{"attributes":{"name_first":"Ada","reference_id":"replayed"}}}'
  elseif mode == "bad" then
    key = "bench-bad-" .. id
    body = '{"data":{"attributes":{"name_first":5}}}'
  end
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. api_key,
    ["Idempotency-Key"] = key,
  }
  return wrk.format("POST", "/api/v1/accounts", headers, body)
end
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  for status, count in pairs(totals) do
    io.write(string.format("status %d: %d\n", status, count))
  end
end
