#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CFuzzerDriver
import TallyFuzzTargets

/// libFuzzer's entry point: one input per call. A trap is a finding; the return value is unused.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    FuzzTarget.aggregateLog.run(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}

// The program's entry point (SwiftPM's, not libFuzzer's `main`): run libFuzzer's loop on it.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzz))
