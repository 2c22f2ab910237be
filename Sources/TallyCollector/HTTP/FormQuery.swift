import Foundation

/// A URL query string decoded as browsers and HTTP clients send it
/// (`application/x-www-form-urlencoded`): `+` is a space, `%XX` a byte of UTF-8. So
/// `?tenant=caf%C3%A9+x` names the tenant "café x", whether a form, `curl --data-urlencode` or
/// JavaScript's `URLSearchParams` wrote it. A parameter whose percent-encoding is not valid UTF-8
/// is an error for the caller, never a silently different tenant.
struct FormQuery {
    private var values: [(name: String, value: String)] = []
    /// The first parameter that did not decode, if any.
    let invalid: String?

    init(_ query: String?) {
        var invalid: String?
        for pair in (query ?? "").split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.decode(parts[0]) else {
                invalid = invalid ?? String(parts[0])
                continue
            }
            guard let value = parts.count > 1 ? Self.decode(parts[1]) : "" else {
                invalid = invalid ?? name
                continue
            }
            values.append((name, value))
        }
        self.invalid = invalid
    }

    /// The first value of `name`, decoded.
    func get(_ name: String) -> String? {
        values.first { $0.name == name }?.value
    }

    private static func decode(_ text: Substring) -> String? {
        String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}
