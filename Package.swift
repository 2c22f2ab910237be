// swift-tools-version:6.1
import PackageDescription

// The folder list follows the data: event -> fingerprint -> spool -> frame -> wire -> collector
// -> ledger -> aggregates -> pricing -> invoice.
// CI builds with TALLY_STRICT=1 (the Makefile sets it when CI is set): warnings are errors in
// Tally's own targets, never in its dependencies.
let strict: [SwiftSetting] =
    [
        .enableUpcomingFeature("ExistentialAny"),
        .enableUpcomingFeature("InternalImportsByDefault"),
    ] + (Context.environment["TALLY_STRICT"] == "1" ? [.unsafeFlags(["-warnings-as-errors"])] : [])

let package = Package(
    name: "Tally",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tally-agent", targets: ["tally-agent"]),
        .executable(name: "tally-collector", targets: ["tally-collector"]),
        .executable(name: "tallyctl", targets: ["tallyctl"]),
        .library(name: "TallyCore", targets: ["TallyCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
    ],
    targets: [
        // libzstd from Debian's libzstd-dev.
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        // Events, validation, fingerprint, periods, money: pure, no I/O.
        .target(
            name: "TallyCore",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        // The deterministic reference workload (`tallyctl gen`).
        .target(name: "TallyWorkload", dependencies: ["TallyCore"], swiftSettings: strict),
        // Frames, payload codec, session state machines, zstd.
        .target(name: "TallyWire", dependencies: ["TallyCore", "CZstd"], swiftSettings: strict),
        // The command trees of the three binaries, in a library so parsing is testable.
        .target(
            name: "TallyCLI",
            dependencies: [
                "TallyCore", "TallyWorkload", "TallyWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "tally-agent", dependencies: ["TallyCLI"], swiftSettings: strict),
        .executableTarget(name: "tally-collector", dependencies: ["TallyCLI"], swiftSettings: strict),
        .executableTarget(name: "tallyctl", dependencies: ["TallyCLI"], swiftSettings: strict),

        .testTarget(name: "TallyCoreTests", dependencies: ["TallyCore"]),
        .testTarget(name: "TallyWireTests", dependencies: ["TallyWire"]),
        .testTarget(name: "TallyWorkloadTests", dependencies: ["TallyWorkload"]),
        .testTarget(name: "EndToEndTests", dependencies: ["TallyCore", "TallyCLI", "TallyWorkload"]),
    ]
)
