import Foundation
import Testing
import TallyWire
import TallyTestSupport

/// Runs a command with `input` on stdin and returns its stdout and exit status.
func runTool(_ path: String, _ arguments: [String], input: [UInt8]) throws -> (output: [UInt8], status: Int32) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let stdin = Pipe()
    let stdout = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = FileHandle.nullDevice
    try ChildSpawner.run(process)  // one spawning thread: see ChildSpawner
    // Write on another thread so a large output cannot dead-lock against a full input pipe.
    let writer = Thread {
        stdin.fileHandleForWriting.write(Data(input))
        try? stdin.fileHandleForWriting.close()
    }
    writer.start()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (Array(output), process.terminationStatus)
}

let zstdTool = ["/usr/bin/zstd", "/usr/local/bin/zstd"].first { FileManager.default.isExecutableFile(atPath: $0) }

@Suite(.offThePool) struct ZstdTests {
    static let sample: [UInt8] = {
        var bytes: [UInt8] = []
        var state: UInt32 = 7
        for i in 0..<200_000 {
            state = state &* 1_103_515_245 &+ 12_345
            bytes.append(i % 7 == 0 ? UInt8(truncatingIfNeeded: state >> 16) : UInt8(ascii: "a") + UInt8(i % 13))
        }
        return bytes
    }()

    @Test func roundTrip() throws {
        let compressor = try ZstdCompressor(level: 1)
        let decompressor = try ZstdDecompressor()
        for input in [Self.sample, [], [42], Array(Self.sample.prefix(1000))] {
            let frame = try compressor.compress(input)
            #expect(try decompressor.decompress(frame, maxOutputSize: input.count) == input)
        }
        // Contexts are reusable.
        let again = try compressor.compress(Self.sample)
        #expect(try decompressor.decompress(again, maxOutputSize: 1 << 20) == Self.sample)
    }

    @Test func theCommandLineToolReadsWhatTallyWrites() throws {
        let tool = try #require(zstdTool, "the zstd command-line tool is not installed")
        let frame = try ZstdCompressor(level: 3).compress(Self.sample)
        let (output, status) = try runTool(tool, ["-d", "-c", "--check"], input: frame)
        #expect(status == 0)
        #expect(output == Self.sample)
    }

    @Test func tallyReadsWhatTheCommandLineToolWrites() throws {
        let tool = try #require(zstdTool, "the zstd command-line tool is not installed")
        // From stdin the tool does not record the content size: Tally must decode in steps.
        let (frame, status) = try runTool(tool, ["-1", "-c", "--check"], input: Self.sample)
        #expect(status == 0)
        #expect(try ZstdDecompressor().decompress(frame, maxOutputSize: Self.sample.count) == Self.sample)
    }

    @Test func aBombWithADeclaredSizeIsRefusedBeforeAllocating() throws {
        // 64 MiB of zeros compresses to a few KiB; the frame header declares the size.
        let bomb = try ZstdCompressor(level: 1).compress([UInt8](repeating: 0, count: 64 << 20))
        #expect(throws: ZstdError.outputLimitExceeded(limit: 1 << 20)) {
            try ZstdDecompressor().decompress(bomb, maxOutputSize: 1 << 20)
        }
    }

    @Test func aBombHidingItsSizeIsRefusedAtTheCap() throws {
        let tool = try #require(zstdTool, "the zstd command-line tool is not installed")
        let zeros = [UInt8](repeating: 0, count: 2 << 20)
        let (frame, _) = try runTool(tool, ["-1", "-c"], input: zeros)  // streamed: no content size
        #expect(frame.count < 4096)
        #expect(throws: ZstdError.outputLimitExceeded(limit: 65_536)) {
            try ZstdDecompressor().decompress(frame, maxOutputSize: 65_536)
        }
        // Exactly at the cap is fine.
        #expect(try ZstdDecompressor().decompress(frame, maxOutputSize: zeros.count).count == zeros.count)
    }

    @Test func corruptAndTruncatedInputIsAnErrorNotACrash() throws {
        let frame = try ZstdCompressor(level: 1).compress(Self.sample)
        let decompressor = try ZstdDecompressor()
        #expect(throws: ZstdError.self) { try decompressor.decompress(Array(frame.prefix(frame.count / 2)), maxOutputSize: 1 << 20) }
        var flipped = frame
        flipped[flipped.count / 2] ^= 0x40
        #expect(throws: ZstdError.self) { try decompressor.decompress(flipped, maxOutputSize: 1 << 20) }
        #expect(throws: ZstdError.self) { try decompressor.decompress([1, 2, 3, 4, 5, 6, 7, 8], maxOutputSize: 1 << 20) }
        #expect(throws: ZstdError.self) { try decompressor.decompress([UInt8](), maxOutputSize: 1 << 20) }
        // The context still works after failures.
        #expect(try decompressor.decompress(frame, maxOutputSize: 1 << 20) == Self.sample)
    }
}
