/// When an append is made durable (see ``SpoolOptions/fsync``).
public enum FsyncPolicy: Sendable, Hashable {
    /// Every batch of appends waiting on the I/O thread is fsynced before any of them returns;
    /// appends that arrive during an fsync share the next one.
    case always
    /// Appends wait for a shared fsync that runs at most `interval` after the first of them was
    /// written: every concurrent writer in that window shares one fsync. Sooner when every
    /// caller that waits on an append (an HTTP request, announced by ``Spool/arrival()``) is
    /// already written and none is on its way: waiting longer would gather nothing.
    case interval(Duration)
    /// Appends return once write(2) has handed the bytes to the kernel; segments are fsynced only
    /// when they are sealed and on close. Survives a killed process, not a power loss.
    case never
}

/// What an append does when the spool has reached ``SpoolOptions/maxSpoolBytes``.
public enum SpoolFullPolicy: Sendable, Hashable {
    /// Refuse the append with ``SpoolError/full(retryAfter:)``; the caller retries later (HTTP 503).
    case block
    /// Refuse the append with ``SpoolError/full(retryAfter:)`` and count it as rejected; the caller
    /// is told not to wait for space (HTTP 429 in the agent).
    case rejectNew
}

/// How a spool is opened.
public enum SpoolAccess: Sendable, Hashable {
    /// The default: takes the directory's exclusive lock, repairs torn tails, quarantines corrupt
    /// records, accepts appends and acknowledgements.
    case exclusive
    /// Takes no lock and changes nothing on disk: for `tallyctl spool status|inspect|verify|export`
    /// while the agent runs. Records being appended concurrently may be seen as a torn tail.
    case readOnly
}

/// The settings of one spool. The defaults suit an agent beside an API server.
public struct SpoolOptions: Sendable, Hashable {
    /// A segment file is sealed and a new one started once it would exceed this size.
    public var segmentBytes: Int = 64 << 20
    /// The most bytes the spool may hold on disk (acknowledged but not yet deleted bytes count).
    public var maxSpoolBytes: Int = 4 << 30
    public var fullPolicy: SpoolFullPolicy = .block
    /// The delay suggested to callers refused with ``SpoolError/full(retryAfter:)``.
    public var retryAfter: Duration = .seconds(1)
    /// The window bounds how long an append waits for the fsync that covers it; appends in one
    /// window share one fsync. An HTTP request's append is synced at once when no other request
    /// is on its way (see ``FsyncPolicy/interval(_:)``), so few latency-bound connections do not
    /// wait the window out, while busy servers and Unix-socket streams keep one fsync per window.
    /// Measured with `tally-bench agent` on this project's 2-core machine, 2026-12-03, alternating
    /// builds: HTTP bodies of 100 on 8 connections 146k–149k events/s without that rule (each
    /// request waited the 5 ms), 443k–487k with it; 64 connections 591k–719k / 609k–666k and the
    /// socket stream 742k–867k / 752k–823k (unchanged within this machine's noise). A shorter
    /// window (`tally-bench agent --agent-fsync 1ms`) costs the socket stream and 64 connections
    /// CPU for the extra fsyncs (measured before the rule: 376k–672k against 470k–594k).
    public var fsync: FsyncPolicy = .interval(.milliseconds(5))
    public var access: SpoolAccess = .exclusive
    /// How long an exclusive open waits for the spool's lock before it fails with
    /// ``SpoolError/locked(directory:)``. A lock can outlive its holder's close for a moment (a
    /// child process being started in that instant holds a copy until its exec), and a
    /// previous agent may still be exiting; a running agent holds it far longer than this.
    public var lockWait: Duration = .seconds(2)
    /// The buffer the scanner and reader use; bounds the memory of recovery and reads.
    public var readBufferBytes: Int = 1 << 20

    public init() {}
}
