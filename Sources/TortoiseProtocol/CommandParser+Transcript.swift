import NIOCore

extension CommandParser {
    /// Parses `chunks`, fed one after the other, and returns each command as written back
    /// and each error as its description: a transcript that must not depend on how the
    /// bytes were split (the fuzzer's and the corpus test's check), nor on whether the
    /// fast path reads the common commands (`fastPath: false` turns it off).
    public static func transcript(of chunks: [ArraySlice<UInt8>], maxBody: Int = 4096, fastPath: Bool = true) -> [String] {
        var parser = CommandParser(maxBody: maxBody, fastPath: fastPath)
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
}
