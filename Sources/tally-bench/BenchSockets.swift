import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why a benchmark client failed.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Plain blocking sockets for the agent benchmark's clients: cheap enough on 2 cores not to be
/// the bottleneck, and nothing of the agent's own stack on the client side.
enum BenchSocket {
    /// A connected TCP socket to 127.0.0.1:`port` (TCP_NODELAY).
    static func tcp(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchFailure("socket() failed: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            close(fd)
            throw BenchFailure("cannot connect to 127.0.0.1:\(port): errno \(code)")
        }
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    /// A connected Unix stream socket at `path`.
    static func unix(path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchFailure("socket() failed: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let fits = withUnsafeMutableBytes(of: &address.sun_path) { raw -> Bool in
            guard bytes.count < raw.count else { return false }
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
            return true
        }
        guard fits else {
            close(fd)
            throw BenchFailure("socket path too long: \(path)")
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            close(fd)
            throw BenchFailure("cannot connect to \(path): errno \(code)")
        }
        return fd
    }

    /// Writes all of `bytes` (no SIGPIPE: a closed peer is an error).
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = send(fd, raw.baseAddress.map { $0 + offset }, raw.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { throw BenchFailure("write failed: errno \(errno)") }
                offset += written
            }
        }
    }
}

/// Counts the agent's answer lines on an NDJSON socket stream: `ok ...`, `err ...`, `full ...`.
struct AnswerCounter {
    var ok = 0
    var err = 0
    var full = 0
    private var atLineStart = true
    var lines: Int { ok + err + full }

    mutating func consume(_ bytes: UnsafeRawBufferPointer) {
        for byte in bytes {
            if atLineStart {
                switch byte {
                case UInt8(ascii: "o"): ok += 1
                case UInt8(ascii: "e"): err += 1
                default: full += 1
                }
                atLineStart = false
            }
            if byte == 0x0A { atLineStart = true }
        }
    }

    /// Reads from `fd` until `expected` answer lines arrived (or the peer closed).
    mutating func read(from fd: Int32, expected: Int) throws {
        var scratch = [UInt8](repeating: 0, count: 1 << 18)
        while lines < expected || !atLineStart {
            let count = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw BenchFailure("the agent closed the stream after \(lines) of \(expected) answers") }
            scratch.withUnsafeBytes { consume(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        }
    }
}

/// A blocking HTTP/1.1 keep-alive client: one request at a time, answers framed by Content-Length.
struct BenchHTTPConnection {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var scratch = [UInt8](repeating: 0, count: 1 << 16)

    init(port: Int) throws { fd = try BenchSocket.tcp(port: port) }

    func close() { _ = Glibc.close(fd) }

    /// The bytes of a request (`body` sent with Content-Length).
    static func request(_ method: String, _ path: String, body: [UInt8] = [], contentType: String = "application/x-ndjson") -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if !body.isEmpty { head += "Content-Type: \(contentType)\r\n" }
        head += "Content-Length: \(body.count)\r\n\r\n"
        return Array(head.utf8) + body
    }

    /// Sends one request and reads its answer.
    mutating func exchange(_ request: [UInt8]) throws -> (status: Int, body: ArraySlice<UInt8>) {
        try BenchSocket.writeAll(fd, request)
        return try response()
    }

    mutating func response() throws -> (status: Int, body: ArraySlice<UInt8>) {
        var searchFrom = 0
        var headerEnd = 0
        while true {
            if let end = Self.find([13, 10, 13, 10], in: buffer, from: searchFrom) {
                headerEnd = end + 4
                break
            }
            searchFrom = max(0, buffer.count - 3)
            try fill()
        }
        let head = String(decoding: buffer[0..<headerEnd], as: UTF8.self)
        let statusText = head.split(separator: " ", maxSplits: 2).dropFirst().first.map(String.init) ?? ""
        guard let status = Int(statusText) else { throw BenchFailure("not an HTTP answer: \(head.prefix(80))") }
        var length = 0
        for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
            length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
        }
        while buffer.count < headerEnd + length { try fill() }
        let body = Array(buffer[headerEnd..<(headerEnd + length)])
        buffer.removeFirst(headerEnd + length)
        return (status, body[...])
    }

    private mutating func fill() throws {
        let fd = self.fd
        while true {
            let count = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw BenchFailure("the server closed the connection") }
            buffer.append(contentsOf: scratch[0..<count])
            return
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        for index in start...(haystack.count - needle.count) where haystack[index] == needle[0] {
            if haystack[index..<(index + needle.count)].elementsEqual(needle) { return index }
        }
        return nil
    }

    /// One GET on a fresh connection: the status and body, or nil when nothing listens.
    static func get(port: Int, _ path: String) -> (status: Int, body: String)? {
        guard var connection = try? BenchHTTPConnection(port: port) else { return nil }
        defer { connection.close() }
        guard let answer = try? connection.exchange(request("GET", path)) else { return nil }
        return (answer.status, String(decoding: answer.body, as: UTF8.self))
    }

    /// The `"accepted":N` count at the start of an ingest answer.
    static func acceptedCount(_ body: ArraySlice<UInt8>) -> Int {
        let prefix = Array(#"{"accepted":"#.utf8)
        guard body.starts(with: prefix) else { return 0 }
        var value = 0
        for byte in body.dropFirst(prefix.count) {
            guard byte >= 0x30 && byte <= 0x39 else { break }
            value = value * 10 + Int(byte - 0x30)
        }
        return value
    }
}
