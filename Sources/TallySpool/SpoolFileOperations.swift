#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The file-system calls the spool makes, behind one seam so tests can count fsyncs and inject
/// ENOSPC or EIO. Every call either does all it says or throws ``SpoolError/io(operation:path:errno:)``.
/// A conforming type is called from the spool's I/O thread only (and from `open` before it).
public protocol SpoolFileOperations: Sendable {
    /// Opens (or creates, with `create`) a file for reading and writing, or reading only.
    func open(_ path: String, create: Bool, readOnly: Bool) throws(SpoolError) -> Int32
    func close(_ fd: Int32)
    /// Writes all of `bytes` at `offset`.
    func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(SpoolError)
    /// Reads up to `buffer.count` bytes at `offset`; returns fewer only at the end of the file.
    func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws(SpoolError) -> Int
    func sync(_ fd: Int32, path: String) throws(SpoolError)
    func truncate(_ fd: Int32, to size: Int64, path: String) throws(SpoolError)
    func size(_ fd: Int32, path: String) throws(SpoolError) -> Int64
    func rename(_ from: String, to: String) throws(SpoolError)
    func remove(_ path: String) throws(SpoolError)
    /// The names (not paths) of the entries of a directory.
    func list(_ directory: String) throws(SpoolError) -> [String]
    func makeDirectory(_ path: String) throws(SpoolError)
    /// Takes an exclusive, non-blocking lock on an open file; false when someone else holds it.
    func lock(_ fd: Int32, path: String) throws(SpoolError) -> Bool
}

/// The real file system, through POSIX calls.
public struct PosixFileOperations: SpoolFileOperations {
    public init() {}

    public func open(_ path: String, create: Bool, readOnly: Bool) throws(SpoolError) -> Int32 {
        var flags = readOnly ? O_RDONLY : O_RDWR
        flags |= O_CLOEXEC
        if create { flags |= O_CREAT }
        while true {
            let fd = Glibc.open(path, flags, 0o644)
            if fd >= 0 { return fd }
            if errno != EINTR { throw .io(operation: "open", path: path, errno: errno) }
        }
    }

    public func close(_ fd: Int32) { _ = Glibc.close(fd) }

    public func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(SpoolError) {
        var done = 0
        while done < bytes.count {
            guard let base = bytes.baseAddress else { return }
            let n = pwrite(fd, base + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "write", path: path, errno: errno)
            }
            done += n
        }
    }

    public func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws(SpoolError) -> Int {
        var done = 0
        while done < buffer.count {
            guard let base = buffer.baseAddress else { return 0 }
            let n = pread(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    public func sync(_ fd: Int32, path: String) throws(SpoolError) {
        while fsync(fd) != 0 {
            if errno != EINTR { throw .io(operation: "fsync", path: path, errno: errno) }
        }
    }

    public func truncate(_ fd: Int32, to size: Int64, path: String) throws(SpoolError) {
        while ftruncate(fd, off_t(size)) != 0 {
            if errno != EINTR { throw .io(operation: "truncate", path: path, errno: errno) }
        }
    }

    public func size(_ fd: Int32, path: String) throws(SpoolError) -> Int64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .io(operation: "stat", path: path, errno: errno) }
        return Int64(info.st_size)
    }

    public func rename(_ from: String, to: String) throws(SpoolError) {
        guard Glibc.rename(from, to) == 0 else { throw .io(operation: "rename", path: from, errno: errno) }
    }

    public func remove(_ path: String) throws(SpoolError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw .io(operation: "unlink", path: path, errno: errno) }
    }

    public func list(_ directory: String) throws(SpoolError) -> [String] {
        guard let dir = opendir(directory) else { throw .io(operation: "opendir", path: directory, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func makeDirectory(_ path: String) throws(SpoolError) {
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw .io(operation: "mkdir", path: path, errno: errno) }
    }

    public func lock(_ fd: Int32, path: String) throws(SpoolError) -> Bool {
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno == EWOULDBLOCK { return false }
            if errno != EINTR { throw .io(operation: "flock", path: path, errno: errno) }
        }
        return true
    }
}
