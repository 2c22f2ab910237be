/// Waits (polling every `interval`, with a deadline) until `condition` holds; returns whether it
/// did. For conditions another process or thread makes true; the deadline turns "never" into a
/// failed expectation instead of a hung test.
public func eventually(
    _ timeout: Duration = .seconds(60), every interval: Duration = .milliseconds(10), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}
