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

/// Who may read what over HTTP (`Authorization: Bearer KEY`, or `Basic` with the key as the
/// password and any user name — what a browser sends for the pages once it has asked for the
/// key): the admin key reads every tenant; a tenant key reads only its tenant. With no admin
/// key configured, requests without a key are allowed from loopback only. A page's 401 carries
/// ``challenge``, so a browser asks its user for the key; the API's does not (Foundation's
/// URLSession on Linux never completes a request answered with a challenge it has no
/// credentials for).
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

    /// The `WWW-Authenticate` value of a page's 401: Basic, so that a browser asks for the key
    /// (as the password) and sends it with the later pages.
    public static let challenge = "Basic realm=\"Tally collector (API key as password)\", charset=\"UTF-8\""

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
        let key = try Self.key(authorization)
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

    /// The key an `Authorization` value carries: `Bearer KEY`, or `Basic BASE64(USER:KEY)`
    /// (RFC 7617; the user name is ignored, the password is the key, exactly as decoded).
    static func key(_ authorization: String) throws(APIError) -> String {
        let bearer = "Bearer "
        if authorization.hasPrefix(bearer) { return String(authorization.dropFirst(bearer.count)) }
        let basic = "Basic "
        guard authorization.hasPrefix(basic) else {
            throw APIError(.unauthorized, "the Authorization header must be 'Bearer KEY' (or Basic with the key as the password)")
        }
        guard let decoded = Data(base64Encoded: String(authorization.dropFirst(basic.count))),
            let credentials = String(data: decoded, encoding: .utf8), let colon = credentials.firstIndex(of: ":")
        else {
            throw APIError(.unauthorized, "the Basic credentials must be base64 of USER:KEY in UTF-8")
        }
        return String(credentials[credentials.index(after: colon)...])
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
