import Foundation
public import Hummingbird
public import NIOCore
import TallyCore
import TallyTLS

/// The collector's request context: Hummingbird's core context plus the peer address, which
/// the key check needs for loopback-only reads.
public struct TallyRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// Who may read what over HTTP (`Authorization: Bearer KEY`): the admin key reads every tenant;
/// a tenant key reads only its tenant. With no admin key configured, requests without a key are
/// allowed from loopback only.
public struct APIAccess: Sendable {
    /// What a request may read.
    public enum Grant: Sendable, Hashable {
        case everything
        case tenant(String)

        /// Throws 403 unless this grant may read `tenant`.
        public func check(tenant: String) throws(APIError) {
            if case .tenant(let own) = self, own != tenant {
                throw APIError(.forbidden, "this key reads tenant '\(own)' only, not '\(tenant)'")
            }
        }
    }

    public var adminKey: String?
    /// key -> tenant.
    public var tenantKeys: [String: String]

    public init(adminKey: String?, tenantKeys: [String: String]) {
        self.adminKey = adminKey
        self.tenantKeys = tenantKeys
    }

    /// Whether keyless loopback reads are allowed (no admin key configured).
    public var allowsLoopbackWithoutKey: Bool { adminKey == nil }

    /// The grant of a request, from its `Authorization` header and peer address.
    public func grant(authorization: String?, remote: SocketAddress?) throws(APIError) -> Grant {
        guard let authorization else {
            if allowsLoopbackWithoutKey, let remote, PeerAddress.isLoopback(remote) { return .everything }
            throw APIError(
                .unauthorized,
                allowsLoopbackWithoutKey
                    ? "send Authorization: Bearer KEY (keyless reads are allowed from loopback only)"
                    : "send Authorization: Bearer KEY")
        }
        // The key is compared exactly as sent: never trimmed, so no whitespace (a non-breaking
        // space, say) can turn into an empty key or into someone else's.
        let prefix = "Bearer "
        guard authorization.hasPrefix(prefix) else { throw APIError(.unauthorized, "the Authorization header must be 'Bearer KEY'") }
        let key = String(authorization.dropFirst(prefix.count))
        guard !key.isEmpty else { throw APIError(.unauthorized, "the API key is empty") }
        // Every configured key is compared, whatever matches, so the time taken says nothing
        // about which key (or how much of one) was right.
        var granted: Grant?
        if let adminKey, Self.constantTimeEqual(key, adminKey) { granted = .everything }
        for (candidate, tenant) in tenantKeys where Self.constantTimeEqual(key, candidate) && granted == nil {
            granted = .tenant(tenant)
        }
        guard let granted else { throw APIError(.unauthorized, "unknown API key") }
        return granted
    }

    /// Compares in time that depends on neither the contents nor the lengths of the keys: both
    /// are hashed (SHA-256) and the digests compared without an early exit.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = SHA256Digest.hash(Array(a.utf8))
        let y = SHA256Digest.hash(Array(b.utf8))
        var difference: UInt8 = 0
        for (left, right) in zip(x, y) { difference |= left ^ right }
        return difference == 0
    }
}

/// An HTTP API error: its status, the parameter at fault (if one), and a message. Sent as
/// `{"error": {"status": 400, "parameter": "from", "message": "..."}}`.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var parameter: String?
    public var message: String

    public init(_ status: HTTPResponse.Status, _ message: String, parameter: String? = nil) {
        self.status = status
        self.message = message
        self.parameter = parameter
    }

    public var description: String { "\(status.code) \(parameter.map { "\($0): " } ?? "")\(message)" }

    /// The API error for a billing failure.
    public init(_ error: BillingError) {
        switch error {
        case .badParameter(let name, let problem): self.init(.badRequest, problem, parameter: name)
        case .unknownPeriod: self.init(.notFound, error.description, parameter: "period")
        case .unknownTenant: self.init(.notFound, error.description, parameter: "tenant")
        case .noPricing: self.init(.notFound, error.description)
        case .unsupported, .pricing, .pricingConfig: self.init(.unprocessableContent, error.description)
        case .ledger, .encoding: self.init(.internalServerError, error.description)
        case .ledgerUnavailable: self.init(.serviceUnavailable, error.description)
        }
    }
}
