-- Caravan prefix key: runs after envoy.filters.http.grpc_field_extraction, which held the
-- request headers until the first gRPC message of the stream was parsed and wrote its
-- fields into dynamic metadata. Sets HEADER to a hash of the first MAX_WORDS
-- whitespace-separated words of the text_input tensor; any surprise leaves HEADER unset
-- (Envoy then picks a replica without a key). Never fails the request.
-- Placeholders filled by caravan.routing.prefix: HEADER, MAX_WORDS.
local HEADER = "@HEADER@"
local MAX_WORDS = @MAX_WORDS@
local NS = "envoy.filters.http.grpc_field_extraction"

local function text_from_raw(v)
  -- Triton's raw BYTES element: 4-byte little-endian length, then the bytes.
  local a, b, c, d = string.byte(v, 1, 4)
  if d == nil then return nil end
  local n = a + b * 256 + c * 65536 + d * 16777216
  return string.sub(v, 5, 4 + n)
end

local function prompt_of(md)
  local names = md["inputs.name"]
  if type(names) ~= "table" then return nil end
  local at = nil
  for i, name in ipairs(names) do
    if name == "text_input" then at = i; break end
  end
  if at == nil then return nil end
  local raw = md["raw_input_contents"]
  if type(raw) == "table" and #raw > 0 then
    if type(raw[at]) ~= "string" then return nil end
    return text_from_raw(raw[at])
  end
  -- typed contents: bytes_contents of every BYTES input, flattened in input order
  local types, flat = md["inputs.datatype"], md["inputs.contents.bytes_contents"]
  if type(types) ~= "table" or type(flat) ~= "table" then return nil end
  local k, total = 0, 0
  for i, t in ipairs(types) do
    if t == "BYTES" then
      total = total + 1
      if i == at then k = total end
    end
  end
  if k == 0 or #flat ~= total then return nil end
  return flat[k]
end

local function first_words(text)
  local out, n = {}, 0
  for w in string.gmatch(text, "%S+") do
    n = n + 1
    out[n] = w
    if n >= MAX_WORDS then break end
  end
  if n == 0 then return nil end
  return table.concat(out, " ")
end

local function fnv1a32_hex(s)
  -- 32-bit FNV-1a of the bytes; x * 16777619 is done as (x << 24) + x * 403 so every
  -- intermediate stays exact in LuaJIT's doubles. Stable and short, not cryptographic.
  local h = 2166136261
  for i = 1, #s do
    h = bit.bxor(h, string.byte(s, i)) % 4294967296
    h = (bit.lshift(h, 24) % 4294967296 + h * 403) % 4294967296
  end
  return string.format("%08x", h)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove(HEADER)
  local md = handle:streamInfo():dynamicMetadata():get(NS)
  if md == nil then return end
  local ok, key = pcall(function()
    local text = prompt_of(md)
    if text == nil then return nil end
    local words = first_words(text)
    if words == nil then return nil end
    return fnv1a32_hex(words)
  end)
  if ok and key ~= nil then headers:add(HEADER, key) end
end
