import NIOCore
import TortoiseProtocol

/// Feeds the input to the command parser twice, whole and split at a point the input
/// chooses, and checks that both give the same commands and errors.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let whole = CommandParser.transcript(of: [bytes[...]])
    let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
    let split = CommandParser.transcript(of: [bytes[..<cut], bytes[cut...]])
    precondition(whole == split, "the parser's answer depends on how the bytes arrive")
    return 0
}
