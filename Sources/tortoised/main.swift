import ArgumentParser
import Foundation
import Logging
import TortoiseProtocol
import TortoiseServer
import TortoiseStorage

/// `tortoised`: the broker.
@main
struct Tortoised: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tortoised",
        abstract: "The TortoiseMQ broker: durable work queues and a searchable failed-task store.",
        discussion: """
            Listens on HOST:PORT and prints `tortoised listening on HOST:PORT` once
            it accepts connections. SIGINT and SIGTERM stop it cleanly (held tasks go
            back to their queues, pending commits finish) with exit status 0. If the
            disk fails a flush, it refuses every change and stops with exit status 74;
            started again, it recovers every confirmed change.

            Examples:
              tortoised --data ./tortoise-data
              TORTOISE_TOKEN=s3cret tortoised --host 0.0.0.0 --failed-retention 30d
            """
    )

    @Option(help: "The data directory (created if missing).")
    var data = "./tortoise-data"

    @Option(help: "The address to listen on.")
    var host = Wire.defaultHost

    @Option(help: "The port to listen on (0: any free port).")
    var port = Wire.defaultPort

    @Option(help: "Clients must AUTH with this token (default: $TORTOISE_TOKEN; none: no authentication).")
    var token: String?

    @Option(name: .customLong("max-body"), help: "The largest task or error body, in bytes.")
    var maxBody = Wire.defaultMaxBody

    @Option(name: .customLong("max-deliveries"), help: "Deliveries after which a returned task goes to the failed store (0: no limit).")
    var maxDeliveries = 10

    @Option(name: .customLong("ack-timeout"), help: "Seconds a worker may hold a task without ACK, NACK, REQUEUE or TOUCH (0: off).")
    var ackTimeout = 1800

    @Option(name: .customLong("failed-retention"), help: "Prune failures older than this (e.g. 30d, 12h; default: keep forever).")
    var failedRetention: String?

    @Option(name: .customLong("max-storage"), help: "The most the store may grow to, in MiB; past it PUT fails with 'storage full'.")
    var maxStorage = 256 * 1024

    @Option(name: .customLong("max-connections"), help: "The most client connections at once.")
    var maxConnections = 10_000

    @Option(name: .customLong("max-subscriptions"), help: "The most queues one connection may SUB to.")
    var maxSubscriptions = 1024

    @Option(name: .customLong("auth-timeout"), help: "With a token: seconds a connection may stay without AUTH (0: no limit).")
    var authTimeout = 10

    @Option(name: .customLong("compact-from"), help: "Compact the store's file if it has at least this many MiB: at start when at most half is live, and see --compact-check (0: never).")
    var compactFrom = 16

    @Option(name: .customLong("compact-check"), help: "While running, look this often (seconds) whether the store's file is worth compacting (at most three quarters and 256 MiB live, at least --compact-from MiB free; the copy is written while changes go on) (0: only at start).")
    var compactCheck = 10.0

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be from 0 to 65535") }
        guard maxBody > 0 && maxBody <= 1 << 30 else { throw ValidationError("--max-body must be from 1 to 1073741824 bytes") }
        guard maxDeliveries >= 0 else { throw ValidationError("--max-deliveries must be 0 or more") }
        guard ackTimeout >= 0 else { throw ValidationError("--ack-timeout must be 0 or more seconds") }
        guard maxStorage >= 4 else { throw ValidationError("--max-storage must be at least 4 (MiB)") }
        guard maxConnections > 0 else { throw ValidationError("--max-connections must be at least 1") }
        guard maxSubscriptions > 0 else { throw ValidationError("--max-subscriptions must be at least 1") }
        guard authTimeout >= 0 else { throw ValidationError("--auth-timeout must be 0 or more seconds") }
        guard compactFrom >= 0 else { throw ValidationError("--compact-from must be 0 or more (MiB)") }
        guard compactCheck >= 0 && compactCheck.isFinite else { throw ValidationError("--compact-check must be 0 or more seconds") }
        if let r = failedRetention, WireTime.parseDuration(r) == nil {
            throw ValidationError("--failed-retention '\(r)' is not a duration like 90s, 30m, 12h or 30d")
        }
    }

    /// Runs the broker on a task of its own while the main thread waits for it: an async
    /// `main` hands the main thread to dispatch for good (`dispatch_main`), which valgrind
    /// cannot follow, and the broker is profiled with callgrind (docs/benchmarks.md).
    func run() throws {
        final class Outcome: @unchecked Sendable { var error: (any Error)? }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let command = self
        Task.detached {
            do { try await command.serve() } catch { outcome.error = error }
            done.signal()
        }
        done.wait()
        if let error = outcome.error { throw error }
    }

    func serve() async throws {
        // Blocks of 256 KiB and more (task payloads, large replies) are mapped and given
        // back to the system when freed. glibc's default raises that threshold to the
        // largest block freed so far, after which such blocks come from the heap, whose
        // freed holes the system does not get back: after a burst of 1 MiB payloads the
        // broker stayed tens of MiB bigger (docs/reliability.md).
        _ = mallopt(-3 /* M_MMAP_THRESHOLD */, 256 << 10)
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .info
            return h
        }
        let logger = Logger(label: "tortoised")
        var config = ServerConfiguration()
        config.dataDirectory = data
        config.host = host
        config.port = port
        config.token = token ?? ProcessInfo.processInfo.environment["TORTOISE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        config.maxBody = maxBody
        config.maxDeliveries = maxDeliveries
        config.ackTimeoutSeconds = ackTimeout
        config.failedRetentionMillis = failedRetention.flatMap(WireTime.parseDuration)
        config.maxStorageBytes = maxStorage << 20
        config.maxConnections = maxConnections
        config.maxSubscriptions = maxSubscriptions
        config.authTimeoutSeconds = authTimeout
        config.compactFilesFrom = compactFrom == 0 ? nil : compactFrom << 20
        config.compactCheckSeconds = compactCheck == 0 ? nil : max(0.01, compactCheck)
        raiseOpenFileLimit(to: maxConnections + 64, logger: logger)

        // Signals arrive on a dispatch source, not as a default handler that kills us.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        let stop = AsyncStream<StopReason>.makeStream()
        let sources = [SIGINT, SIGTERM].map { sig in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { stop.continuation.yield(.signal(sig)) }
            s.resume()
            return s
        }
        config.storeHalted = { message in stop.continuation.yield(.storeHalted(message)) }

        let server: TortoiseServer
        do {
            server = try await TortoiseServer.start(config, logger: logger)
        } catch let e as StorageError {
            logger.critical("cannot open the data directory: \(e.message)")
            throw ExitCode(1)
        } catch {
            logger.critical("cannot listen on \(host):\(port): \(error)")
            throw ExitCode(1)
        }
        let bound = server.localAddress?.port ?? port
        logger.info("data directory \(data); auth \(config.token == nil ? "off" : "on"); ack timeout \(ackTimeout)s; max deliveries \(maxDeliveries)")
        FileHandle.standardOutput.write(Data("tortoised listening on \(host):\(bound)\n".utf8))

        // The signal sources must live until a signal came: an optimised build would
        // otherwise free them after their last use, and the signals would be ignored.
        defer { withExtendedLifetime(sources) {} }
        var halted = false
        for await reason in stop.stream {
            switch reason {
            case .signal(let sig):
                logger.info("got \(sig == SIGINT ? "SIGINT" : "SIGTERM"); shutting down")
            case .storeHalted:
                halted = true
                logger.critical("stopping with exit status \(Self.haltedExitStatus): start tortoised again once the disk is sound; it recovers every confirmed change from the data directory")
            }
            break
        }
        await server.shutdown()
        if halted { throw ExitCode(Self.haltedExitStatus) }
        logger.info("stopped cleanly")
    }

    /// The exit status after the disk failed a flush (sysexits' EX_IOERR).
    static let haltedExitStatus: Int32 = 74
}

/// Why `tortoised` stops.
enum StopReason: Sendable {
    case signal(Int32)
    case storeHalted(String)
}

/// Raises the soft limit of open files towards `wanted` (up to the hard limit), so that
/// `--max-connections` can be reached.
func raiseOpenFileLimit(to wanted: Int, logger: Logger) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    let target = min(rlim_t(wanted), limit.rlim_max)
    if limit.rlim_cur < target {
        limit.rlim_cur = target
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    if Int(limit.rlim_cur) < wanted {
        logger.warning("open-file limit \(limit.rlim_cur) is below --max-connections \(wanted - 64); raise it (ulimit -n)")
    }
}

/// glibc's `mallopt` (malloc.h is not in the Glibc module).
@_silgen_name("mallopt")
private func mallopt(_ parameter: Int32, _ value: Int32) -> Int32
