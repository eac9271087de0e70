import NIOCore
import TortoiseProtocol

/// Feeds the input to the command parser twice, whole and split at a point the input
/// chooses, and checks that both give the same commands and errors.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    func run(_ chunks: [ArraySlice<UInt8>]) -> [String] {
        var parser = CommandParser(maxBody: 4096)
        var buffer = ByteBuffer()
        var out: [String] = []
        for c in chunks {
            buffer.writeBytes(c)
            while let r = parser.next(from: &buffer) {
                switch r {
                case .success(let cmd):
                    var b = ByteBuffer()
                    cmd.write(to: &b)
                    out.append(String(decoding: b.readableBytesView, as: UTF8.self))
                case .failure(let e):
                    out.append(e.description)
                }
            }
        }
        return out
    }
    let whole = run([bytes[...]])
    let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
    let split = run([bytes[..<cut], bytes[cut...]])
    precondition(whole == split, "the parser's answer depends on how the bytes arrive")
    return 0
}
