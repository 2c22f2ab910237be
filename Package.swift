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
        .library(name: "TallyPricing", targets: ["TallyPricing"]),
        .library(name: "TallySpool", targets: ["TallySpool"]),
        .library(name: "TallyLedger", targets: ["TallyLedger"]),
        .library(name: "TallyClient", targets: ["TallyClient"]),
        .library(name: "TallyHummingbird", targets: ["TallyHummingbird"]),
        .library(name: "TallyFuzzTargets", targets: ["TallyFuzzTargets"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.29.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.0"),
    ],
    targets: [
        // libzstd from Debian's libzstd-dev.
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        // libsqlite3 from Debian's libsqlite3-dev: the embedded ledger store.
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // libyaml from Debian's libyaml-dev: the config files' parser (TallyConfig's YAMLNode).
        .systemLibrary(
            name: "CLibYAML",
            pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"])]
        ),
        // CRC-32C with the CPU's instruction (SSE 4.2 / ARMv8 CRC32), for TallyCore's CRC32C.
        .target(name: "CTallyCRC32C"),
        // sched_setattr for ResponsiveThread (no glibc wrapper; Swift cannot call syscall(2)).
        .target(name: "CTallyThreads"),
        // Events, validation, fingerprint, periods, money: pure, no I/O.
        .target(
            name: "TallyCore",
            // SHA-256 and HMAC from the BoringSSL that swift-nio-ssl links into every binary for
            // TLS (SHA256Digest): no second crypto library, no Foundation.
            dependencies: ["CTallyCRC32C", "CTallyThreads", .product(name: "NIOSSL", package: "swift-nio-ssl")],
            swiftSettings: strict
        ),
        // Pricing: the YAML pricing config (read once, validated) and the pure pricing engine.
        // Reads YAML configs by their source text, with file:line:column errors.
        .target(
            name: "TallyConfig",
            dependencies: ["TallyCore", "CLibYAML"],
            swiftSettings: strict
        ),
        // TLS for every connection that leaves the host: contexts from the configured PEM files,
        // certificate identities, and the plain-TCP policy (loopback only unless allowed), also as
        // the security of TallyClient's HTTP client.
        .target(
            name: "TallyTLS",
            dependencies: [
                "TallyConfig", "TallyClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TallyPricing",
            dependencies: ["TallyCore", "TallyConfig"],
            swiftSettings: strict
        ),
        // The deterministic reference workload (`tallyctl gen`).
        .target(name: "TallyWorkload", dependencies: ["TallyCore"], swiftSettings: strict),
        // Frames, payload codec, session state machines, zstd.
        .target(
            name: "TallyWire",
            dependencies: [
                "TallyCore", "CZstd",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // What every Tally binary and server shares: the command runner and global options, the
        // logging and metrics bootstrap, and the one accept loop of the three listeners.
        .target(
            name: "TallyService",
            dependencies: [
                "TallyConfig",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Segments, CRC32C records, group commit, recovery: the agent's durable spool.
        .target(name: "TallySpool", dependencies: ["TallyCore"], exclude: ["FORMAT.md"], swiftSettings: strict),
        // The agent: local ingest (HTTP, Unix socket), batcher and shipper, config, metrics.
        .target(
            name: "TallyAgent",
            dependencies: [
                "TallyCore", "TallySpool", "TallyWire", "TallyConfig", "TallyTLS", "TallyService",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Sends events to the local agent over HTTP (NIO, no Foundation networking), with Tally's
        // one HTTP client (HTTPExchange), which the collector's exports and tallyctl use too.
        .target(
            name: "TallyClient",
            dependencies: [
                "TallyCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // A Hummingbird middleware that meters every request through TallyClient.
        .target(
            name: "TallyHummingbird",
            dependencies: [
                "TallyClient", "TallyCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The agent's command tree: all `tally-agent` links, so it carries no collector, ledger or
        // pricing.
        .target(
            name: "TallyAgentCommand",
            dependencies: [
                "TallyAgent", "TallyService", "TallyConfig", "TallySpool", "TallyTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // The command trees of the collector and tallyctl (and, re-exported, the agent's), in a
        // library so parsing is testable.
        .target(
            name: "TallyCLI",
            dependencies: [
                "TallyAgentCommand", "TallyService",
                "TallyCore", "TallyWorkload", "TallyWire", "TallyConfig", "TallyCollector", "TallyAgent", "TallySpool",
                "TallyLedger", "TallyPricing", "TallyTLS", "TallyClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The collector: protocol server, ack pipeline, HTTP API, invoices, exports.
        .target(
            name: "TallyCollector",
            dependencies: [
                "TallyCore", "TallyConfig", "TallyWire", "TallyPricing", "TallyLedger", "TallyTLS", "TallyService", "TallyClient",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The ledger: the store protocol, the rules (pure), the SQLite and PostgreSQL
        // (postgres-nio) backends, and the one place that opens a store from its address.
        .target(
            name: "TallyLedger",
            dependencies: [
                "TallyCore", "CSQLite",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The fuzz entry points (FuzzTesting/ builds them with libFuzzer; `make test` replays the
        // kept corpus through them): every decoder of bytes from outside, with round-trip checks.
        .target(
            name: "TallyFuzzTargets",
            dependencies: [
                "TallyCore", "TallyWire", "TallySpool", "TallyAgent", "TallyCollector", "TallyPricing", "TallyLedger",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "tally-agent", dependencies: ["TallyAgentCommand"], swiftSettings: strict),
        .executableTarget(name: "tally-collector", dependencies: ["TallyCLI"], swiftSettings: strict),
        .executableTarget(name: "tallyctl", dependencies: ["TallyCLI"], swiftSettings: strict),
        // Benchmarks (release builds): `swift run -c release tally-bench query`.
        .executableTarget(
            name: "tally-bench",
            dependencies: [
                "TallyCore", "TallyLedger", "TallyPricing", "TallyCollector", "TallyWorkload", "TallyCLI", "TallyWire",
                "TallySpool", "TallyTestSupport", "CSQLite",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // swift-crypto only as a second SHA-256 (its own BoringSSL copy, behind its Swift API) to check SHA256Digest against.
        .testTarget(
            name: "TallyCoreTests",
            dependencies: ["TallyCore", "TallyWorkload", "TallyTestSupport", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .testTarget(name: "TallyPricingTests", dependencies: ["TallyPricing", "TallyCore", "TallyConfig"]),
        .testTarget(name: "TallyWireTests", dependencies: ["TallyWire", "TallyWorkload", "TallyTestSupport"]),
        .testTarget(
            name: "TallyCollectorTests",
            dependencies: [
                "TallyCollector", "TallyCore", "TallyConfig", "TallyLedger", "TallyPricing", "TallyCLI",
                "TallyTLS", "TallyAgent", "TallySpool", "TallyWire", "TallyClient", "TallyTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "TallyWorkloadTests", dependencies: ["TallyWorkload", "TallyTestSupport"]),
        .testTarget(
            name: "TallyFuzzReplayTests",
            dependencies: [
                "TallyFuzzTargets", "TallyCore", "TallyWire", "TallySpool", "TallyLedger", "TallyTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "TallySpoolTests", dependencies: ["TallySpool", "TallyCore", "TallyWorkload", "TallyTestSupport"]),
        // What the tests share: one throwaway PostgreSQL server per run, waits off the pool.
        .target(
            name: "TallyTestSupport", dependencies: ["TallyCore", .product(name: "Logging", package: "swift-log")], path: "Tests/TallyTestSupport"),
        .testTarget(
            name: "TallyLedgerTests",
            dependencies: [
                "TallyLedger", "TallyCore", "TallyWorkload", "TallyTestSupport", .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"), .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "TallyCore", "TallyCLI", "TallyWorkload", "TallyWire", "TallyLedger", "TallySpool", "TallyAgent", "TallyClient",
                "TallyTestSupport",
            ]
        ),
        .testTarget(
            name: "TallyAgentTests",
            dependencies: [
                "TallyAgent", "TallyClient", "TallyHummingbird", "TallyWire", "TallySpool", "TallyCore", "TallyCLI",
                "TallyService", "TallyTestSupport", "TallyWorkload",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
        // One table of bad input per boundary (events, frames, payloads, spool files, configs),
        // each row with the exact error it must produce and proof that nothing else was lost.
        .testTarget(
            name: "BadInputTests",
            dependencies: [
                "TallyCore", "TallyWire", "TallySpool", "TallyAgent", "TallyCollector", "TallyLedger", "TallyConfig",
                "TallyPricing", "TallyClient", "TallyTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
    ]
)
