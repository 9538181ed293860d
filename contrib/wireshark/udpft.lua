-- Wireshark dissector for udpft, protocol version 1 (PROTOCOL.md §2–3).
--
-- Install: copy this file to ~/.local/lib/wireshark/plugins/ (Wireshark ≥ 2.6; older:
-- ~/.wireshark/plugins/), or load it for one run:
--   tshark -X lua_script:contrib/wireshark/udpft.lua -r capture.pcapng
-- It is registered for UDP port 6969 and, for any other port, as a heuristic dissector
-- that recognises the magic "UF" followed by version 1 and a type from 1 to 6.
-- Every field is named udpft.*; udpft.crc_ok says whether the CRC32 matches.

local udpft = Proto("udpft", "udpft file transfer")

local TYPES = { [1] = "REQUEST", [2] = "ACCEPT", [3] = "DATA", [4] = "ACK", [5] = "DONE", [6] = "ERROR",
    [7] = "RETRY", [8] = "WAIT" }
local OPS = { [1] = "get", [2] = "put", [3] = "list", [4] = "delete", [5] = "exit" }
local ERRORS = {
    [0] = "undefined", [1] = "not found", [2] = "access denied", [3] = "already exists",
    [4] = "busy", [5] = "not allowed", [6] = "bad request", [7] = "I/O error",
    [8] = "integrity", [9] = "aborted",
}

local f = udpft.fields
f.magic = ProtoField.uint16("udpft.magic", "Magic", base.HEX)
f.version = ProtoField.uint8("udpft.version", "Version")
f.type = ProtoField.uint8("udpft.type", "Type", base.DEC, TYPES)
f.session = ProtoField.uint64("udpft.session", "Session id", base.HEX)
f.seq = ProtoField.uint64("udpft.seq", "Sequence number")
f.length = ProtoField.uint16("udpft.length", "Payload length")
f.crc = ProtoField.uint32("udpft.crc", "CRC32", base.HEX)
f.crc_ok = ProtoField.bool("udpft.crc_ok", "CRC32 correct")
f.op = ProtoField.uint8("udpft.op", "Op", base.DEC, OPS)
f.flags = ProtoField.uint8("udpft.flags", "Flags", base.HEX)
f.block_size = ProtoField.uint32("udpft.block_size", "Block size")
f.size = ProtoField.uint64("udpft.size", "Size")
f.name_len = ProtoField.uint16("udpft.name_len", "Name length")
f.name = ProtoField.string("udpft.name", "Name", base.UNICODE)
f.token = ProtoField.bytes("udpft.token", "Address-check token")
f.padding = ProtoField.bytes("udpft.padding", "Padding")
f.nonce = ProtoField.uint64("udpft.nonce", "Nonce", base.HEX)
f.data = ProtoField.bytes("udpft.data", "Data")
f.stream_length = ProtoField.uint64("udpft.stream_length", "Stream length")
f.stream_crc = ProtoField.uint32("udpft.stream_crc", "Stream CRC32", base.HEX)
f.error_code = ProtoField.uint16("udpft.error_code", "Error code", base.DEC, ERRORS)
f.error_message = ProtoField.string("udpft.error_message", "Message", base.UNICODE)

local e_bad_crc = ProtoExpert.new("udpft.crc_bad", "Bad CRC32: a receiver drops this datagram unread",
    expert.group.CHECKSUM, expert.severity.ERROR)
local e_malformed = ProtoExpert.new("udpft.malformed", "Malformed udpft datagram",
    expert.group.MALFORMED, expert.severity.ERROR)
udpft.experts = { e_bad_crc, e_malformed }

-- Bit operations on 32-bit values for Lua 5.1/5.2 (bit, bit32) and 5.3+ (operators,
-- loaded from text so that older Luas still parse this file).
local bxor, band, rshift
if bit32 then
    bxor, band, rshift = bit32.bxor, bit32.band, bit32.rshift
elseif bit then
    bxor, band, rshift = bit.bxor, bit.band, bit.rshift
else
    bxor = load("return function(a, b) return (a ~ b) & 0xFFFFFFFF end")()
    band = load("return function(a, b) return a & b end")()
    rshift = load("return function(a, n) return (a & 0xFFFFFFFF) >> n end")()
end

local function u32(v)
    if v < 0 then v = v + 4294967296 end
    return v
end

-- CRC-32/IEEE 802.3 (reflected, polynomial 0xEDB88320), as PROTOCOL.md §2.
local CRC_TABLE = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if band(c, 1) ~= 0 then
            c = bxor(rshift(c, 1), 0xEDB88320)
        else
            c = rshift(c, 1)
        end
    end
    CRC_TABLE[i] = c
end

local function crc32(bytes, len)
    local c = 0xFFFFFFFF
    for i = 0, len - 1 do
        c = bxor(CRC_TABLE[band(bxor(c, bytes:get_index(i)), 0xFF)], rshift(c, 8))
    end
    return u32(bxor(c, 0xFFFFFFFF))
end

local function looks_like_udpft(tvb)
    return tvb:len() >= 26 and tvb(0, 1):uint() == 0x55 and tvb(1, 1):uint() == 0x46
        and tvb(2, 1):uint() == 1 and tvb(3, 1):uint() >= 1 and tvb(3, 1):uint() <= 8
end

local function dissect_payload(kind, p, plen, tree)
    if kind == 1 then -- REQUEST
        if plen < 16 then return "short REQUEST" end
        tree:add(f.op, p(0, 1))
        tree:add(f.flags, p(1, 1))
        tree:add(f.block_size, p(2, 4))
        tree:add(f.size, p(6, 8))
        tree:add(f.name_len, p(14, 2))
        local nlen = p(14, 2):uint()
        if 16 + nlen > plen then return "name longer than the payload" end
        if nlen > 0 then tree:add(f.name, p(16, nlen)) end
        local rest = 16 + nlen
        local with_token = band(p(1, 1):uint(), 1) == 1
        if with_token then
            if rest + 16 > plen then return "token longer than the payload" end
            tree:add(f.token, p(rest, 16))
            rest = rest + 16
        end
        if plen > rest then tree:add(f.padding, p(rest, plen - rest)) end
        local name = nlen > 0 and p(16, nlen):string() or ""
        return string.format("%s '%s', block size %d%s", OPS[p(0, 1):uint()] or "?", name, p(2, 4):uint(),
            with_token and ", with token" or "")
    elseif kind == 2 then -- ACCEPT
        if plen ~= 22 then return "ACCEPT payload is not 22 bytes" end
        tree:add(f.nonce, p(0, 8))
        tree:add(f.op, p(8, 1))
        tree:add(f.flags, p(9, 1))
        tree:add(f.block_size, p(10, 4))
        tree:add(f.size, p(14, 8))
        return string.format("%s, block size %d, size %s", OPS[p(8, 1):uint()] or "?", p(10, 4):uint(),
            tostring(p(14, 8):uint64()))
    elseif kind == 3 then -- DATA
        if plen > 0 then tree:add(f.data, p(0, plen)) end
        return string.format("%d bytes", plen)
    elseif kind == 4 then -- ACK
        return nil
    elseif kind == 5 then -- DONE
        if plen ~= 12 then return "DONE payload is not 12 bytes" end
        tree:add(f.stream_length, p(0, 8))
        tree:add(f.stream_crc, p(8, 4))
        return string.format("length %s, CRC32 %08x", tostring(p(0, 8):uint64()), p(8, 4):uint())
    elseif kind == 7 then -- RETRY
        if plen ~= 16 then return "RETRY payload is not 16 bytes" end
        tree:add(f.token, p(0, 16))
        return "address check: send the request again with this token"
    elseif kind == 8 then -- WAIT
        return "storing: do not resend DONE"
    elseif kind == 6 then -- ERROR
        if plen < 2 then return "short ERROR" end
        tree:add(f.error_code, p(0, 2))
        if plen > 2 then tree:add(f.error_message, p(2, plen - 2)) end
        local msg = plen > 2 and p(2, plen - 2):string() or ""
        return string.format("%s: %s", ERRORS[p(0, 2):uint()] or "code " .. p(0, 2):uint(), msg)
    end
end

function udpft.dissector(tvb, pinfo, tree)
    local n = tvb:len()
    if n < 26 then return 0 end
    pinfo.cols.protocol = "UDPFT"
    local t = tree:add(udpft, tvb())
    t:add(f.magic, tvb(0, 2))
    t:add(f.version, tvb(2, 1))
    t:add(f.type, tvb(3, 1))
    t:add(f.session, tvb(4, 8))
    t:add(f.seq, tvb(12, 8))
    t:add(f.length, tvb(20, 2))
    local crc_item = t:add(f.crc, tvb(n - 4, 4))
    local ok = crc32(tvb:bytes(0, n - 4), n - 4) == tvb(n - 4, 4):uint()
    local ok_item = t:add(f.crc_ok, ok)
    ok_item:set_generated()
    local kind = tvb(3, 1):uint()
    local seq = tvb(12, 8):uint64()
    local info = string.format("%s #%s", TYPES[kind] or ("type " .. kind), tostring(seq))
    if not ok then
        crc_item:add_proto_expert_info(e_bad_crc)
        info = info .. " [bad CRC32]"
    end
    local plen = tvb(20, 2):uint()
    if plen ~= n - 26 then
        t:add_proto_expert_info(e_malformed, "payload length field differs from the datagram's size - 26")
    else
        local detail = dissect_payload(kind, tvb(22, plen), plen, t)
        if detail then info = info .. ", " .. detail end
    end
    pinfo.cols.info = info
    t:append_text(", " .. info)
    return n
end

local function heuristic(tvb, pinfo, tree)
    if not looks_like_udpft(tvb) then return false end
    udpft.dissector(tvb, pinfo, tree)
    pinfo.conversation = udpft
    return true
end

DissectorTable.get("udp.port"):add(6969, udpft)
udpft:register_heuristic("udp", heuristic)
