import Foundation
import NIOCore
import TallyCore
import TallyWire

/// A hand-driven agent over a blocking loopback socket: it sends exactly the bytes a test wants
/// (good frames, torn frames, corrupt frames) and reads the collector's frames back.
final class ScriptedAgent {
    private let fd: Int32
    private var inbound = ByteBuffer()
    private var decoder = FrameDecoder(maxBodyLength: 64 << 20)
    private let encoder = FrameEncoder()

    init(port: Int) throws {
        signal(SIGPIPE, SIG_IGN)  // a write to a socket the collector closed must fail, not kill the test
        fd = try RawConnection.open(port: port)
    }

    deinit { close(fd) }

    func frameBytes(_ frame: Frame) throws -> [UInt8] {
        let buffer = try encoder.encode(frame)
        return buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? []
    }

    func send(_ frame: Frame) throws { try sendRaw(frameBytes(frame)) }

    func sendRaw(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written > 0 else { throw HarnessError("write failed: errno \(errno)") }
            offset += written
        }
    }

    /// The next frame, or nil when the collector closed the connection. Waits up to `timeout`.
    func receive(timeout: Duration = .seconds(30)) throws -> Frame? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let frame = try decoder.decode(buffer: &inbound) { return frame }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw HarnessError("no frame within \(timeout)") }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(remaining.components.seconds * 1000 + 1))
            guard ready > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { return nil }
            inbound.writeBytes(chunk[0..<count])
        }
    }

    /// hello → challenge → auth → welcome, with `secret` (nil: open mode).
    @discardableResult
    func handshake(agentId: String, secret: String?) throws -> Frame? {
        let agentNonce = Nonce.random()
        try send(.hello(Hello(minVersion: 1, maxVersion: 1, agentId: agentId, agentNonce: agentNonce, software: "scripted-test")))
        let first = try receive()
        guard case .challenge(let challenge)? = first else { return first }
        let proof = Handshake.agentProof(
            secret: Array((secret ?? "").utf8), version: challenge.version, agentId: agentId, agentNonce: agentNonce,
            collectorNonce: challenge.collectorNonce)
        try send(.auth(Auth(proof: proof)))
        return try receive()
    }

    func batchFrame(sequence: UInt64, events: [UsageEvent]) throws -> Frame {
        .batch(Batch(sequence: sequence, payload: try BatchPayloadEncoder().encode(events)))
    }

    /// Sends a batch and returns the collector's answer.
    func sendBatch(sequence: UInt64, events: [UsageEvent]) throws -> Frame? {
        try send(batchFrame(sequence: sequence, events: events))
        return try receive()
    }
}
