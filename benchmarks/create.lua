-- POST /api/v1/accounts. MODE=new: a fresh Idempotency-Key and reference_id per request;
-- MODE=same: one key for every request (replays); MODE=bad: an invalid body, one key
-- per wrk thread (the 400 is recorded once, then replayed).
local counter = 0
local thread_id = 0
function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
end
function init(args)
  api_key = os.getenv("API_KEY") or ""
  mode = os.getenv("MODE") or "new"
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
