import Foundation
import Synchronization
import TallyCore

#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy between agents and one collector that hurts the Tally protocol frame by frame.
///
/// It reads just enough of the framing (SPEC.md §2: a 9-byte header whose last four bytes are the
/// body length, the body, a 4-byte CRC) to find where each frame ends, and on command:
/// - **cuts** every open connection at its next frame, after forwarding a random prefix of it
///   (mid-frame), or between frames when the connection stays silent;
/// - **delays** every frame in both directions;
/// - **drops acks** on the way back (collector → agent), optionally cutting the connection after
///   the lost ack, as a dying connection loses it;
/// - **duplicates** and **reorders** batch frames on the way in.
///
/// Blocking sockets, one thread per direction of each connection and one accepting: it sits in
/// the test process, and nothing in it waits on Swift concurrency.
final class FaultProxy: Sendable {
    let port: Int
    let upstreamPort: Int
    private let listener: Int32
    private let shared: ProxyShared
    private let acceptorDone = DispatchSemaphore(value: 0)

    /// Listens on a kernel-chosen loopback port and forwards to `127.0.0.1:upstreamPort`.
    /// `seed` drives the prefix lengths of mid-frame cuts.
    init(upstreamPort: Int, seed: UInt64) throws {
        self.upstreamPort = upstreamPort
        let (listener, port) = try Socket.listen()
        self.listener = listener
        self.port = port
        shared = ProxyShared(seed: seed, upstreamPort: upstreamPort)
        let thread = Thread { [shared, listener, acceptorDone] in
            shared.accept(on: listener)
            close(listener)
            acceptorDone.signal()
        }
        thread.name = "fault-proxy-accept"
        thread.start()
    }

    /// Cuts every open connection at its next frame (forwarding a random part of it first), or
    /// between frames after 200 ms of silence.
    func cutAll() { shared.armCuts() }

    /// Holds every frame for `delay` before forwarding it (nil: no delay).
    func delay(_ delay: Duration?) { shared.faults.withLock { $0.delay = delay } }

    /// Drops the next `count` acks on their way to the agents; with `thenCut`, the connection
    /// that lost one is cut right after.
    func dropAcks(_ count: Int, thenCut: Bool) {
        shared.faults.withLock {
            $0.acksToDrop += count
            $0.cutAfterDrop = thenCut
        }
    }

    /// Sends each of the next `count` batches twice.
    func duplicateBatches(_ count: Int) { shared.faults.withLock { $0.batchesToDuplicate += count } }

    /// Holds each of the next `count` batches back until the frame after it has gone (or 200 ms).
    func reorderBatches(_ count: Int) { shared.faults.withLock { $0.batchesToReorder += count } }

    /// No more faults: frames flow as they come (connections already cut stay cut).
    func heal() { shared.faults.withLock { $0 = ProxyFaults() } }

    /// What the proxy did so far.
    var tally: ProxyTally { shared.tally.withLock { $0 } }

    /// Stops accepting and closes every connection.
    func stop() {
        shared.stopped.store(true, ordering: .sequentiallyConsistent)
        shared.closeAll()
        acceptorDone.wait()
    }
}

/// What a ``FaultProxy`` did: the fault table's proxy rows.
struct ProxyTally: Sendable {
    var connections = 0
    var refusedUpstream = 0
    var cutsMidFrame = 0
    var cutsBetweenFrames = 0
    var acksDropped = 0
    var batchesDuplicated = 0
    var batchesReordered = 0
    var framesDelayed = 0

    mutating func add(_ other: ProxyTally) {
        connections += other.connections
        refusedUpstream += other.refusedUpstream
        cutsMidFrame += other.cutsMidFrame
        cutsBetweenFrames += other.cutsBetweenFrames
        acksDropped += other.acksDropped
        batchesDuplicated += other.batchesDuplicated
        batchesReordered += other.batchesReordered
        framesDelayed += other.framesDelayed
    }
}

/// The faults armed now.
private struct ProxyFaults {
    var delay: Duration?
    var acksToDrop = 0
    var cutAfterDrop = false
    var batchesToDuplicate = 0
    var batchesToReorder = 0
}

/// The state the proxy's threads share.
private final class ProxyShared: Sendable {
    let faults = Mutex(ProxyFaults())
    let tally = Mutex(ProxyTally())
    let stopped = Atomic<Bool>(false)
    private let random: Mutex<SplitMix64>
    private let connections = Mutex<[Int: ProxiedConnection]>([:])
    private let nextId = Atomic<Int>(0)
    private let upstreamPort: Int

    init(seed: UInt64, upstreamPort: Int) {
        random = Mutex(SplitMix64(seed: seed))
        self.upstreamPort = upstreamPort
    }

    func randomInt(below bound: Int) -> Int { random.withLock { Int.random(in: 0..<max(1, bound), using: &$0) } }

    func accept(on listener: Int32) {
        while !stopped.load(ordering: .sequentiallyConsistent) {
            guard Socket.waitReadable(listener, milliseconds: 100) else { continue }
            let downstream = Glibc.accept(listener, nil, nil)
            guard downstream >= 0 else { continue }
            guard let upstream = try? Socket.connect(port: upstreamPort) else {
                tally.withLock { $0.refusedUpstream += 1 }
                close(downstream)
                continue
            }
            let id = nextId.wrappingAdd(1, ordering: .relaxed).oldValue
            let connection = ProxiedConnection(downstream: downstream, upstream: upstream)
            connections.withLock { $0[id] = connection }
            tally.withLock { $0.connections += 1 }
            for direction in [Direction.toCollector, .toAgent] {
                let thread = Thread { [self] in
                    pump(connection, direction)
                    if connection.pumpFinished() { _ = connections.withLock { $0.removeValue(forKey: id) } }
                }
                thread.name = "fault-proxy-\(id)-\(direction)"
                thread.start()
            }
        }
    }

    func armCuts() {
        let now = ContinuousClock.now
        for connection in connections.withLock({ Array($0.values) }) { connection.armCut(at: now) }
    }

    func closeAll() {
        for connection in connections.withLock({ Array($0.values) }) { connection.shut() }
    }

    /// Forwards one direction of `connection` frame by frame, applying the armed faults.
    private func pump(_ connection: ProxiedConnection, _ direction: Direction) {
        let (source, destination) =
            direction == .toCollector ? (connection.downstream, connection.upstream) : (connection.upstream, connection.downstream)
        var pending: [UInt8] = []
        var held: (frame: [UInt8], since: ContinuousClock.Instant)?
        var chunk = [UInt8](repeating: 0, count: 65_536)
        func send(_ bytes: [UInt8]) -> Bool {
            guard Socket.sendAll(destination, bytes) else {
                connection.shut()
                return false
            }
            return true
        }
        while !connection.isShut {
            if let armed = connection.cutArmedAt {
                if !pending.isEmpty {
                    // Mid-frame: a random part of what is on its way, then nothing more.
                    let prefix = 1 + randomInt(below: max(1, min(pending.count, frameLength(pending) ?? pending.count) - 1))
                    _ = Socket.sendAll(destination, Array(pending.prefix(prefix)))
                    if connection.shut() { tally.withLock { $0.cutsMidFrame += 1 } }
                    break
                }
                if ContinuousClock.now - armed >= .milliseconds(200) {
                    if connection.shut() { tally.withLock { $0.cutsBetweenFrames += 1 } }
                    break
                }
            }
            if let (frame, since) = held, ContinuousClock.now - since >= .milliseconds(200) {
                held = nil
                guard send(frame) else { break }
            }
            guard Socket.waitReadable(source, milliseconds: 50) else { continue }
            let count = chunk.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            guard count > 0 else {
                if let (frame, _) = held { _ = Socket.sendAll(destination, frame) }
                connection.shut()
                break
            }
            pending.append(contentsOf: chunk[0..<count])
            if connection.cutArmedAt != nil { continue }
            while let length = frameLength(pending), pending.count >= length {
                let frame = Array(pending.prefix(length))
                pending.removeFirst(length)
                guard forward(frame, direction, connection, &held, send) else { return }
            }
            if pending.count >= 2, pending[0] != 0x54 || pending[1] != 0x4C {
                // Not Tally framing (never expected): pass the bytes through untouched.
                guard send(pending) else { break }
                pending.removeAll()
            }
        }
    }

    /// Applies the armed faults to one whole frame; false when the connection is gone.
    private func forward(
        _ frame: [UInt8], _ direction: Direction, _ connection: ProxiedConnection, _ held: inout (frame: [UInt8], since: ContinuousClock.Instant)?,
        _ send: ([UInt8]) -> Bool
    ) -> Bool {
        let type = frame[3]
        let decision = faults.withLock { faults -> (delay: Duration?, drop: Bool, cutAfter: Bool, duplicate: Bool, reorder: Bool) in
            var decision = (delay: faults.delay, drop: false, cutAfter: false, duplicate: false, reorder: false)
            if direction == .toAgent, type == 0x06, faults.acksToDrop > 0 {
                faults.acksToDrop -= 1
                decision.drop = true
                decision.cutAfter = faults.cutAfterDrop
            }
            if direction == .toCollector, type == 0x05 {
                if faults.batchesToDuplicate > 0 {
                    faults.batchesToDuplicate -= 1
                    decision.duplicate = true
                } else if faults.batchesToReorder > 0, held == nil {
                    faults.batchesToReorder -= 1
                    decision.reorder = true
                }
            }
            return decision
        }
        if let delay = decision.delay {
            tally.withLock { $0.framesDelayed += 1 }
            let (seconds, attoseconds) = delay.components
            usleep(UInt32(clamping: seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
        }
        if decision.drop {
            tally.withLock { $0.acksDropped += 1 }
            if decision.cutAfter { connection.armCut(at: .now) }
            return true
        }
        if decision.reorder {
            tally.withLock { $0.batchesReordered += 1 }
            held = (frame, .now)
            return true
        }
        guard send(frame) else { return false }
        if decision.duplicate {
            tally.withLock { $0.batchesDuplicated += 1 }
            guard send(frame) else { return false }
        }
        if let (late, _) = held {
            held = nil
            guard send(late) else { return false }
        }
        return true
    }

    /// The whole length of the frame at the start of `bytes`, once its header is there.
    private func frameLength(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 9, bytes[0] == 0x54, bytes[1] == 0x4C else { return nil }
        let body = bytes[5..<9].reduce(0) { $0 << 8 | Int($1) }
        return 9 + body + 4
    }
}

private enum Direction: Sendable, CustomStringConvertible {
    case toCollector, toAgent
    var description: String { self == .toCollector ? "in" : "out" }
}

/// One agent connection and its collector connection.
private final class ProxiedConnection: Sendable {
    let downstream: Int32
    let upstream: Int32
    private let cut = Mutex<ContinuousClock.Instant?>(nil)
    private let closed = Atomic<Bool>(false)
    private let finished = Atomic<Int>(0)

    init(downstream: Int32, upstream: Int32) {
        self.downstream = downstream
        self.upstream = upstream
    }

    var cutArmedAt: ContinuousClock.Instant? { cut.withLock { $0 } }
    var isShut: Bool { closed.load(ordering: .sequentiallyConsistent) }

    func armCut(at instant: ContinuousClock.Instant) { cut.withLock { $0 = $0 ?? instant } }

    /// Shuts both sockets down (the pumps see it and end); true for the call that did it.
    @discardableResult
    func shut() -> Bool {
        guard closed.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged else { return false }
        shutdown(downstream, Int32(SHUT_RDWR))
        shutdown(upstream, Int32(SHUT_RDWR))
        return true
    }

    /// One pump ended; the second closes the sockets and returns true.
    func pumpFinished() -> Bool {
        guard finished.wrappingAdd(1, ordering: .sequentiallyConsistent).newValue == 2 else { return false }
        close(downstream)
        close(upstream)
        return true
    }
}

/// The few socket calls the proxy makes, on loopback.
private enum Socket {
    static func listen() throws -> (descriptor: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 64) == 0 else {
            close(fd)
            throw HarnessError("bind/listen: \(String(cString: strerror(errno)))")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
        var address = loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw HarnessError("connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    /// Whether `fd` has something to read (or has ended) within the time.
    static func waitReadable(_ fd: Int32, milliseconds: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, milliseconds) > 0
    }

    /// Writes all of `bytes`; false once the peer is gone (never SIGPIPE).
    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { send(fd, $0.baseAddress.map { $0 + offset }, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if written < 0, errno == EINTR { continue }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
