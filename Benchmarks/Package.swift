// swift-tools-version:6.1
// The benchmarks live in their own package so that `swift test` never builds them.
// Run: swift run -c release --package-path Benchmarks tortoise-bench <suite>
import PackageDescription

let package = Package(
    name: "tortoise-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "tortoisemq", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        .executableTarget(
            name: "tortoise-bench",
            dependencies: [
                .product(name: "TortoiseStorage", package: "tortoisemq"),
                .product(name: "TortoiseProtocol", package: "tortoisemq"),
                .product(name: "TortoiseClient", package: "tortoisemq"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
