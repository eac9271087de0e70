import Foundation

/// The "1,000 queues, 2,000 worker connections" figure, the same for every broker: how
/// long the connections take to set up, how long one task per queue takes to put (a
/// fresh producer connection each), and when the last of them reached a worker. The
/// workers are watched with poll(2), so a worker that gets nothing costs no waiting.
struct ManyConnections {
    var setUpSeconds = 0.0
    var putSeconds = 0.0
    /// From the last put's confirmation to the last delivery.
    var lastDeliveryAfterPutsMillis = 0.0
    var delivered = 0
    /// The broker's anonymous RSS with every connection still open, in KiB.
    var anonymousKiB = 0

    /// `connect(i)` opens worker connection i and waits until it is subscribed; it
    /// returns the socket to watch and a function that reads its task and acks it (true
    /// when there was one). `put(q)` puts one task into queue q and waits for its
    /// confirmation. `pid` is the broker's process, for its memory.
    static func measure(workers: Int, queues: Int, pid: Int32,
                        connect: (Int) throws -> (fd: Int32, takeAndAck: () throws -> Bool),
                        put: (Int) throws -> Void) throws -> ManyConnections {
        var m = ManyConnections()
        var watched: [(fd: Int32, takeAndAck: () throws -> Bool)] = []
        let c0 = DispatchTime.now()
        for i in 0..<workers { watched.append(try connect(i)) }
        m.setUpSeconds = elapsedSeconds(since: c0)
        let p0 = DispatchTime.now()
        for q in 0..<queues { try put(q) }
        m.putSeconds = elapsedSeconds(since: p0)
        let d0 = DispatchTime.now()
        let deadline = d0.uptimeNanoseconds + 10_000_000_000
        var fds = watched.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        var owners = Array(watched.indices)
        while m.delivered < queues {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < deadline else { break }
            let n = poll(&fds, nfds_t(fds.count), Int32((deadline - now) / 1_000_000) + 1)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { continue }
            var keepFds: [pollfd] = [], keepOwners: [Int] = []
            for (k, p) in fds.enumerated() {
                if p.revents != 0, try watched[owners[k]].takeAndAck() {
                    m.delivered += 1
                    continue
                }
                keepFds.append(pollfd(fd: p.fd, events: Int16(POLLIN), revents: 0))
                keepOwners.append(owners[k])
            }
            fds = keepFds
            owners = keepOwners
        }
        m.lastDeliveryAfterPutsMillis = elapsedSeconds(since: d0) * 1000
        m.anonymousKiB = ScaleBench.memory(pid).anon
        return m
    }

    func summary(workers: Int, queues: Int, broker: String) -> String {
        let f = { (x: Double, d: Int) in String(format: "%.\(d)f", x) }
        return "\(broker)\(workers) worker connections on \(queues) queues: connected and subscribed in \(f(setUpSeconds, 1)) s; "
            + "\(queues) puts (a new producer connection each) in \(f(putSeconds, 1)) s; "
            + "\(delivered) of \(queues) tasks delivered, the last \(f(lastDeliveryAfterPutsMillis, 1)) ms after the last put; "
            + "anonymous RSS \(mib(anonymousKiB))"
    }
}
