import Foundation
import TortoiseProtocol

/// Where the broker is and how to authenticate.
public struct TortoiseClientConfiguration: Sendable, Equatable {
    /// The broker's host.
    public var host: String
    /// The broker's port.
    public var port: Int
    /// The token, when the broker wants one.
    public var token: String?
    /// How long to wait for a connection.
    public var connectTimeout: Duration = .seconds(5)

    /// A configuration; unspecified parts come from `TORTOISE_HOST`, `TORTOISE_PORT` and
    /// `TORTOISE_TOKEN`, then from the defaults `127.0.0.1:7654`.
    public init(host: String? = nil, port: Int? = nil, token: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.host = host ?? environment["TORTOISE_HOST"].flatMap { $0.isEmpty ? nil : $0 } ?? Wire.defaultHost
        self.port = port ?? environment["TORTOISE_PORT"].flatMap { Int($0) } ?? Wire.defaultPort
        self.token = token ?? environment["TORTOISE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// A configuration from a URL like `tortoise://:token@host:port`.
    public init(url: String) throws(TortoiseClientError) {
        guard let u = URLComponents(string: url), u.scheme == "tortoise" else {
            throw TortoiseClientError(.badArgument, "'\(url)' is not a tortoise:// URL (tortoise://:token@host:port)")
        }
        let token = u.password ?? (u.user.flatMap { $0.isEmpty ? nil : $0 })
        self.init(host: u.host.flatMap { $0.isEmpty ? nil : $0 } ?? Wire.defaultHost, port: u.port ?? Wire.defaultPort,
                  token: token?.removingPercentEncoding ?? token, environment: [:])
    }
}
