// swift-tools-version:6.1
import PackageDescription

// The libFuzzer executables: one per fuzz target of Tally's `TallyFuzzTargets` library, named
// like the target's corpus folder (Corpus/<name>/). Built with `-sanitize=fuzzer,address`; each
// hands its entry point to libFuzzer's driver (CFuzzerDriver). See README.md, or `make fuzz`.
let fuzzers = [
    "FuzzFrameDecoder", "FuzzBatchPayloadDecoder", "FuzzSpoolRecord", "FuzzSpoolRecovery", "FuzzEventJSON",
    "FuzzPricingConfig", "FuzzAgentConfig", "FuzzCollectorConfig", "FuzzAggregateLog",
]

let package = Package(
    name: "TallyFuzzTesting",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "Tally", path: "..")],
    targets: [.target(name: "CFuzzerDriver")]
        + fuzzers.map { name in
            .executableTarget(name: name, dependencies: ["CFuzzerDriver", .product(name: "TallyFuzzTargets", package: "Tally")])
        }
)
