import NIOCore
import NIOPosix
import TallyCore

#if canImport(Glibc)
import Glibc
#endif

/// A failed connection to a collector, said in words for the log and `tallyctl status`: "connection
/// refused", not NIO's `NIOConnectionError(…, connectionErrors: [SingleConnectionFailure(target: …)])`.
enum ConnectionFailureText {
    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as NIOConnectionError:
            if let failure = error.connectionErrors.first { return describe(failure.error) }
            if error.dnsAError != nil || error.dnsAAAAError != nil { return "the host name \(error.host) does not resolve" }
            return "no address to connect to for \(error.host)"
        case let error as IOError:
            return describe(errno: error.errnoCode) ?? "\(error.description)"
        case ChannelError.connectTimeout(let timeout):
            return "no answer within \(DurationText.format(.nanoseconds(timeout.nanoseconds)))"
        case ChannelError.eof, ChannelError.ioOnClosedChannel, ChannelError.alreadyClosed, ChannelError.outputClosed:
            return "the collector closed the connection"
        default:
            return "\(error)"
        }
    }

    static func describe(errno code: Int32) -> String? {
        switch code {
        case ECONNREFUSED: "connection refused (is a collector listening there?)"
        case ECONNRESET: "the connection was reset by the collector"
        case ETIMEDOUT: "the connection timed out"
        case EHOSTUNREACH, ENETUNREACH: "the collector's network is unreachable"
        case EPIPE: "the collector closed the connection"
        default: nil
        }
    }
}
