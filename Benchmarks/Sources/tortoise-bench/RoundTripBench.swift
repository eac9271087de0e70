import ArgumentParser
import Foundation

/// The ceiling for a prefetch-1 worker: two threads passing an `ACK` line and a
/// 100-byte `MSG` back and forth over loopback TCP, with no broker in between. A worker
/// that waits for each task can go no faster than this on the machine.
struct RoundTripBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "roundtrip",
        abstract: "Loopback TCP ping-pong (ACK line out, MSG frame back): the ceiling for one prefetch-1 worker."
    )

    @Option(help: "Seconds to measure.") var seconds = 3.0

    func run() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &len) } }
        listen(listener, 1)
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let msg = Array("MSG 1234 q 1 100\r\n".utf8) + [UInt8](repeating: 120, count: 100) + [13, 10]
        let server = Thread {
            let c = accept(listener, nil, nil)
            var one: Int32 = 1
            setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var buf = [UInt8](repeating: 0, count: 256)
            while buf.withUnsafeMutableBytes({ recv(c, $0.baseAddress, 256, 0) }) > 0 {
                _ = msg.withUnsafeBytes { send(c, $0.baseAddress, $0.count, 0) }
            }
            close(c)
        }
        server.start()
        let s = try BlockingSocket(port: port)
        var n = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            try s.write("ACK 1234\r\n")
            _ = try s.read(msg.count)
            n += 1
        }
        let rate = Double(n) / Date().timeIntervalSince(start)
        print("loopback round trips (ACK line out, 122-byte MSG back), one thread each side: \(Int(rate)) /s")
        close(listener)
    }
}
