import NIOCore
import TortoiseProtocol

/// Feeds the input to the command parser three times, whole, split at a point the input
/// chooses, and whole through the general path only (no fast path for the common
/// commands), and checks that all three give the same commands and errors.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let whole = CommandParser.transcript(of: [bytes[...]])
    let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
    let split = CommandParser.transcript(of: [bytes[..<cut], bytes[cut...]])
    precondition(whole == split, "the parser's answer depends on how the bytes arrive")
    let general = CommandParser.transcript(of: [bytes[...]], fastPath: false)
    precondition(whole == general, "the parser's fast path and general path disagree")
    return 0
}
