/// Every fuzz target: its name (the FuzzTesting executable and its corpus folder,
/// `FuzzTesting/Corpus/<name>/`) and its entry point.
///
/// An entry point feeds the bytes to a real decoder. A thrown error is a correct answer to bad
/// input and is swallowed; a trap, a crash or a hang is a finding. Where a decoder has an
/// encoder, the entry point also checks the round trip and traps when it breaks (``finding(_:)``),
/// so that logic bugs are findings too.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case frameDecoder = "FuzzFrameDecoder"
    case batchPayloadDecoder = "FuzzBatchPayloadDecoder"
    case spoolRecord = "FuzzSpoolRecord"
    case spoolRecovery = "FuzzSpoolRecovery"
    case eventJSON = "FuzzEventJSON"
    case pricingConfig = "FuzzPricingConfig"
    case agentConfig = "FuzzAgentConfig"
    case collectorConfig = "FuzzCollectorConfig"
    case aggregateLog = "FuzzAggregateLog"

    /// Runs one input through the target. Blocks the calling thread until done (the spool
    /// target waits for the spool's async API): call it from a thread of its own, as libFuzzer
    /// does, never from a task of Swift concurrency's pool.
    public func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .frameDecoder: fuzzFrameDecoder(bytes)
        case .batchPayloadDecoder: fuzzBatchPayloadDecoder(bytes)
        case .spoolRecord: fuzzSpoolRecord(bytes)
        case .spoolRecovery: fuzzSpoolRecovery(bytes)
        case .eventJSON: fuzzEventJSON(bytes)
        case .pricingConfig: fuzzPricingConfig(bytes)
        case .agentConfig: fuzzAgentConfig(bytes)
        case .collectorConfig: fuzzCollectorConfig(bytes)
        case .aggregateLog: fuzzAggregateLog(bytes)
        }
    }

    public func run(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { run($0) }
    }
}

/// A broken property: a logic bug. It traps so that libFuzzer keeps the input (and the corpus
/// replay in `make test` fails on it).
func finding(_ what: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    preconditionFailure("fuzz finding: \(what())", file: file, line: line)
}

/// Traps with ``finding(_:)`` unless `condition` holds.
func require(_ condition: Bool, _ what: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    if !condition { finding(what(), file: file, line: line) }
}
