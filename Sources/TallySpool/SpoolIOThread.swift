#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TallyCore

/// The one thread that touches the spool's files, and its group-commit loop (the rule of when to
/// fsync is ``GroupCommit``'s).
///
/// Callers only take a mutex for an instant to enqueue a job; fsync, write and read run here, so
/// no Swift concurrency thread ever waits on the disk. Appends drained together, and appends that
/// arrive while an fsync runs or while the interval elapses, share one fsync (with `interval`, at
/// most one fsync per interval, and none sooner than needed when the disk was idle); each append's
/// completion runs only after the fsync that covers its records has returned.
final class SpoolIOThread: @unchecked Sendable {
    typealias Completion = @Sendable (Result<SpoolPosition, SpoolError>) -> Void

    enum Job {
        /// `awaited`: the caller waits for the completion before sending more (see GroupCommit).
        case append(EncodedBatch, Completion, awaited: Bool)
        case task(@Sendable (SpoolStore) -> Void)
    }

    // Guarded by `mutex`.
    private var queue: [Job] = []
    /// Awaited appends on their way: ``SpoolArrival``s begun and neither submitted nor ended.
    private var arriving = 0
    private var stopping = false
    private var finished = false
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()

    // Owned by the I/O thread.
    private var store: SpoolStore?
    private var groupCommit: GroupCommit
    private var opening: (@Sendable () throws(SpoolError) -> SpoolStore)?
    private var opened: (@Sendable (Result<RecoveryReport, SpoolError>) -> Void)?
    /// Appends written and waiting for the sync that covers them.
    private var pending: [(SpoolPosition, Completion)] = []

    init(policy: FsyncPolicy) {
        groupCommit = GroupCommit(policy: policy)
        pthread_mutex_init(&mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(&condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    /// Starts the thread; it opens the store with `opening`, reports to `opened`, then serves jobs
    /// (or exits when opening failed).
    func start(
        opening: @escaping @Sendable () throws(SpoolError) -> SpoolStore,
        opened: @escaping @Sendable (Result<RecoveryReport, SpoolError>) -> Void
    ) {
        self.opening = opening
        self.opened = opened
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let created = pthread_create(
            &thread, nil,
            { context in
                guard let context else { return nil }
                let ioThread = Unmanaged<SpoolIOThread>.fromOpaque(context).takeRetainedValue()
                ioThread.run()
                return nil
            }, context)
        if created == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<SpoolIOThread>.fromOpaque(context).release()
            pthread_mutex_lock(&mutex)
            finished = true
            pthread_mutex_unlock(&mutex)
            opened(.failure(.io(operation: "pthread_create", path: "spool I/O thread", errno: created)))
        }
    }

    /// Enqueues a job; false when the thread has stopped (the spool is closed). An `arrival`
    /// ends in the same instant, so the thread never sees it gone without its append queued.
    func submit(_ job: Job, ending arrival: SpoolArrival? = nil) -> Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if let arrival { endLocked(arrival) }
        guard !stopping, !finished else { return false }
        queue.append(job)
        pthread_cond_signal(&condition)
        return true
    }

    /// An awaited append is on its way (``Spool/arrival()``).
    func arrive(_ arrival: SpoolArrival) {
        pthread_mutex_lock(&mutex)
        arriving += 1
        arrival.counted = true
        pthread_mutex_unlock(&mutex)
    }

    /// An arrival ended without an append (or its append was queued): wakes the thread, which may
    /// now sync what waits.
    func end(_ arrival: SpoolArrival) {
        pthread_mutex_lock(&mutex)
        endLocked(arrival)
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
    }

    private func endLocked(_ arrival: SpoolArrival) {
        guard arrival.counted else { return }
        arrival.counted = false
        arriving -= 1
    }

    /// Asks the thread to finish the queued jobs, sync, close the store and exit; `done` runs last.
    func stop(then done: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(&mutex)
        let alreadyFinished = finished
        if !stopping && !finished {
            stopping = true
            queue.append(.task { _ in done() })
            pthread_cond_signal(&condition)
        }
        pthread_mutex_unlock(&mutex)
        if alreadyFinished { done() }
    }

    private func run() {
        ThreadName.set("tally-spool-io")
        guard let opening, let opened else { return }
        self.opening = nil
        self.opened = nil
        let store: SpoolStore
        do throws(SpoolError) {
            store = try opening()
        } catch {
            pthread_mutex_lock(&mutex)
            finished = true
            pthread_mutex_unlock(&mutex)
            opened(.failure(error))
            return
        }
        self.store = store
        opened(.success(store.report))
        serve(store)
    }

    private func serve(_ store: SpoolStore) {
        while true {
            pthread_mutex_lock(&mutex)
            while queue.isEmpty && !stopping && !groupCommit.isDue(at: Self.now(), arriving: arriving) {
                if let deadline = groupCommit.deadline {
                    var until = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
                    pthread_cond_timedwait(&condition, &mutex, &until)
                } else {
                    pthread_cond_wait(&condition, &mutex)
                }
            }
            let jobs = queue
            queue.removeAll(keepingCapacity: true)
            let stop = stopping
            pthread_mutex_unlock(&mutex)

            var finalTasks: [@Sendable (SpoolStore) -> Void] = []
            for (index, job) in jobs.enumerated() {
                switch job {
                case .append(let batch, let completion, let awaited):
                    do {
                        let end = try store.append(batch)
                        if groupCommit.completesWithoutSync {
                            completion(.success(end))
                        } else {
                            groupCommit.appended(at: Self.now(), awaited: awaited)
                            pending.append((end, completion))
                        }
                    } catch {
                        completion(.failure(error))
                    }
                    if store.lostUnsynced {
                        failPending(store.options.fullPolicy == .block ? .full(retryAfter: store.options.retryAfter) : .rejectedFull)
                    }
                case .task(let body):
                    if stop && index == jobs.count - 1 { finalTasks.append(body) } else { body(store) }
                }
            }
            if !pending.isEmpty && (stop || groupCommit.isDue(at: Self.now(), arriving: arrivingNow())) {
                syncPending()
            }
            if stop {
                pthread_mutex_lock(&mutex)
                let rest = queue
                queue.removeAll()
                finished = true
                pthread_mutex_unlock(&mutex)
                for job in rest {
                    if case .append(_, let completion, _) = job { completion(.failure(.closed)) } else if case .task(let body) = job { body(store) }
                }
                store.close()
                for body in finalTasks { body(store) }
                return
            }
        }
    }

    /// Arrivals on their way, read under the mutex; more appends may be queued already (then the
    /// loop serves them first and asks again).
    private func arrivingNow() -> Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return queue.isEmpty ? arriving : Int.max
    }

    private func syncPending() {
        guard let store else { return }
        do {
            try store.sync()
            groupCommit.synced(at: Self.now())
            let done = pending
            pending.removeAll(keepingCapacity: true)
            for (end, completion) in done { completion(.success(end)) }
        } catch {
            failPending(error)
        }
    }

    private func failPending(_ error: SpoolError) {
        store?.lostUnsynced = false
        let failed = pending
        pending.removeAll(keepingCapacity: true)
        groupCommit.dropped()
        for (_, completion) in failed { completion(.failure(error)) }
    }

    /// CLOCK_MONOTONIC in nanoseconds (the condition variable waits on that clock).
    private static func now() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
