/// Why TLS could not be set up from its configured files: the place in the config, the file,
/// and the cause (a read error, or the TLS library's own error for a file that is not PEM).
public struct TLSSetupError: Error, CustomStringConvertible {
    /// The config key at fault, e.g. `tls.listen.certificate`.
    public var place: String
    public var path: String
    public var problem: String
    public var cause: (any Error)?

    public init(place: String, path: String, problem: String, cause: (any Error)? = nil) {
        self.place = place
        self.path = path
        self.problem = problem
        self.cause = cause
    }

    public var description: String {
        (path.isEmpty ? place : "\(place) '\(path)'") + ": \(problem)" + (cause.map { " (\($0))" } ?? "")
    }
}
