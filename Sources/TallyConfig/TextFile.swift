#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a file could not be read.
public struct FileReadError: Error, Sendable, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "cannot read \(path): \(reason)" }
}

/// The whole of a small UTF-8 text file (configs), without Foundation.
public func readTextFile(_ path: String, maxBytes: Int = 16 << 20) throws(FileReadError) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileReadError(path: path, reason: String(cString: strerror(errno))) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            throw FileReadError(path: path, reason: String(cString: strerror(errno)))
        }
        if count == 0 { break }
        bytes.append(contentsOf: chunk[0..<count])
        if bytes.count > maxBytes { throw FileReadError(path: path, reason: "larger than \(maxBytes) bytes") }
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
        throw FileReadError(path: path, reason: "not UTF-8 text")
    }
    return text
}

/// The first steps every config loader shares: read the file, parse the YAML into a node tree.
public enum ConfigDocument {
    /// The text of a config file, or a ``ConfigError`` naming it.
    public static func text(ofFile path: String) throws(ConfigError) -> String {
        do {
            return try readTextFile(path)
        } catch {
            throw ConfigError(file: path, issues: [ConfigIssue(place: "", problem: error.description)])
        }
    }

    /// The YAML node tree of `yaml` (nil for an empty document), or a ``ConfigError``.
    public static func compose(_ yaml: String, file: String) throws(ConfigError) -> YAMLNode? {
        do throws(YAMLSyntaxError) {
            return try YAMLNode.compose(yaml)
        } catch {
            throw ConfigError(
                file: file, issues: [ConfigIssue(place: "", problem: "not valid YAML: \(error.problem)", line: error.line, column: error.column)])
        }
    }

    /// The top-level keys of `yaml` (nil for an empty document: every default stands), with the
    /// reader that goes on to read their values. A document that is not a mapping, or has a key
    /// not in `allowed`, is a ``ConfigError``.
    public static func topLevel(_ yaml: String, file: String, allowed: [String]) throws(ConfigError) -> (Fields, YAMLReader)? {
        guard let root = try compose(yaml, file: file) else { return nil }
        var reader = YAMLReader()
        guard let fields = reader.mapping(root, "", allowed: allowed) else { throw ConfigError(file: file, issues: reader.issues) }
        return (fields, reader)
    }
}
