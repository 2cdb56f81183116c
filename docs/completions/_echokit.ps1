
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'echokit' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'echokit'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'echokit' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Serve echo over TCP (default) and/or UDP: every byte received is sent back')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Send input to an echo server and check that it all comes back')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Load an echo server and check every echoed byte')
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Merge the histogram logs of bench runs (one machine or several) into one report')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Check that an echo endpoint (a server, or a proxy in front of one) keeps TCP and UDP echo intact')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script (bash, zsh, fish, powershell, elvish) on stdout')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'echokit;serve' {
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address to listen on: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT, a name listened on at every address it resolves to. Repeatable: every address is served by the same event loop(s). An IPv6 address, [::] included, is IPv6 only: add 0.0.0.0:PORT for IPv4. Port 0 picks a free port; later port-0 addresses take the port the first one got when it is free there. Prints "listening on IP:PORT" once per address, in order, once all are bound')
            [CompletionResult]::new('--backlog', '--backlog', [CompletionResultType]::ParameterName, 'Length of the queue of connections waiting to be accepted')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'Connections served at once; further ones are closed as soon as accepted')
            [CompletionResult]::new('--idle-timeout', '--idle-timeout', [CompletionResultType]::ParameterName, 'Close connections that move no byte for this many seconds (fractions allowed)')
            [CompletionResult]::new('--udp-peer-rate', '--udp-peer-rate', [CompletionResultType]::ParameterName, 'UDP datagrams per second echoed to one source IP address; the excess is dropped. `off` for no bound. The default is above what `echokit bench --udp` reaches')
            [CompletionResult]::new('--workers', '--workers', [CompletionResultType]::ParameterName, 'Event loops (threads), each serving every listener; default: one per core. The WebAssembly build has no threads and always runs one')
            [CompletionResult]::new('--shutdown-timeout', '--shutdown-timeout', [CompletionResultType]::ParameterName, 'On SIGINT or SIGTERM, stop accepting and give open connections this many seconds to finish their echo before closing them (native build; a second signal exits at once)')
            [CompletionResult]::new('--proxy-protocol', '--proxy-protocol', [CompletionResultType]::ParameterName, 'Every TCP connection must start with a PROXY protocol header (HAProxy''s, as load balancers send it with the real client''s address) of this version: v1 (text), v2 (binary) or any. The header is consumed, never echoed; a connection whose header is missing, invalid or late is closed unechoed, its reason counted. -v logs each header. With --udp, every datagram must start with a v2 DGRAM (or LOCAL) header, stripped before the echo; datagrams without one are dropped and counted')
            [CompletionResult]::new('--proxy-header-timeout', '--proxy-header-timeout', [CompletionResultType]::ParameterName, 'Seconds a connection may take to send its whole PROXY header (with --proxy-protocol)')
            [CompletionResult]::new('--io', '--io', [CompletionResultType]::ParameterName, 'I/O backend: natively auto (io_uring where the kernel allows it, else epoll), uring or epoll; in the wasm build auto (read and write) or splice (faster on wasmtime, traps on jco)')
            [CompletionResult]::new('--tcp', '--tcp', [CompletionResultType]::ParameterName, 'Serve TCP echo (the default when neither --tcp nor --udp is given)')
            [CompletionResult]::new('--udp', '--udp', [CompletionResultType]::ParameterName, 'Serve UDP echo; with --tcp too, both on the same address and port. Datagrams from source ports below 1024 and from peers in an echo loop are dropped (see docs/security.md)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log every connection''s open and close (peer, bytes echoed, duration) to stderr')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log every connection''s open and close (peer, bytes echoed, duration) to stderr')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print nothing on stderr, not even errors (the "listening on" line stays)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print nothing on stderr, not even errors (the "listening on" line stays)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'echokit;send' {
            [CompletionResult]::new('--connect', '--connect', [CompletionResultType]::ParameterName, 'Echo server to connect to: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT. Of a name''s several addresses, the first that answers is used, in the resolver''s order')
            [CompletionResult]::new('--input', '--input', [CompletionResultType]::ParameterName, 'File to send; "-" reads standard input')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'File to write the echo to; "-" writes standard output')
            [CompletionResult]::new('--datagram-size', '--datagram-size', [CompletionResultType]::ParameterName, 'Bytes per datagram (with --udp; at most 65507)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Seconds to wait for each datagram''s echo before sending it again (with --udp)')
            [CompletionResult]::new('--retries', '--retries', [CompletionResultType]::ParameterName, 'How many times a datagram is sent again before it counts as lost (with --udp)')
            [CompletionResult]::new('--proxy-protocol', '--proxy-protocol', [CompletionResultType]::ParameterName, 'Start every TCP connection with a PROXY protocol header of this version (v1 or v2), as a load balancer does, to test a server or balancer that expects one. Its addresses are the connection''s own unless --proxy-source or --proxy-destination say otherwise')
            [CompletionResult]::new('--proxy-source', '--proxy-source', [CompletionResultType]::ParameterName, 'The client address the PROXY header claims (IP:PORT)')
            [CompletionResult]::new('--proxy-destination', '--proxy-destination', [CompletionResultType]::ParameterName, 'The destination address the PROXY header claims (IP:PORT)')
            [CompletionResult]::new('--io', '--io', [CompletionResultType]::ParameterName, 'I/O backend: natively auto (io_uring where the kernel allows it, else epoll), uring or epoll; in the wasm build auto (read and write) or splice (faster on wasmtime, traps on jco)')
            [CompletionResult]::new('--udp', '--udp', [CompletionResultType]::ParameterName, 'Send over UDP, one datagram at a time, each waiting for its echo')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'echokit;bench' {
            [CompletionResult]::new('--connect', '--connect', [CompletionResultType]::ParameterName, 'Echo server to load: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT. Of a name''s several addresses, the first that answers is loaded, in the resolver''s order')
            [CompletionResult]::new('--connections', '--connections', [CompletionResultType]::ParameterName, 'Connections kept open at once (in connect mode: connections in flight at once, at most)')
            [CompletionResult]::new('--size', '--size', [CompletionResultType]::ParameterName, 'Message size in bytes; in stream mode, the write size (at most 64 KiB is used)')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'How long to measure, in seconds (fractions allowed), after the warm-up')
            [CompletionResult]::new('--warmup', '--warmup', [CompletionResultType]::ParameterName, 'Load for this long first, excluded from every figure')
            [CompletionResult]::new('--mode', '--mode', [CompletionResultType]::ParameterName, 'Traffic shape')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'Open loop: send N messages per second in all, spread evenly over the connections, whatever the echoes do (several in flight per connection); latency counts from each message''s scheduled send. In connect mode: N new connections per second. Default: closed loop')
            [CompletionResult]::new('--pipeline', '--pipeline', [CompletionResultType]::ParameterName, 'Open loop: at most N messages in flight on one connection; the next ones wait in the load generator and are written late (counted as late; their corrected latency includes the wait)')
            [CompletionResult]::new('--connect-rate', '--connect-rate', [CompletionResultType]::ParameterName, 'Open the connections at N per second instead of all at once (not in connect mode); the report says when the last was up')
            [CompletionResult]::new('--bind', '--bind', [CompletionResultType]::ParameterName, 'Source addresses, connections spread evenly over them (each has its own ephemeral ports; loopback has all of 127.0.0.0/8). Each must be an address of this host. A host name stands for its addresses of the server''s family')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Report each interval of this many seconds: a line on stderr, or with --json a JSON event on stdout')
            [CompletionResult]::new('--histogram-log', '--histogram-log', [CompletionResultType]::ParameterName, 'Write the latency histograms of every interval (1 s without --interval) to FILE as an HdrHistogram interval log, for `echokit report` to merge. The wasm build needs the directory granted (`wasmtime run --dir`)')
            [CompletionResult]::new('--loss-timeout', '--loss-timeout', [CompletionResultType]::ParameterName, 'With --udp: a datagram not echoed within SECS counts as lost. Default: twice the smoothed round trip plus four times its variation (as TCP''s retransmission timeout), 0.2 s to 10 s, 1 s before the first echo')
            [CompletionResult]::new('--proxy-protocol', '--proxy-protocol', [CompletionResultType]::ParameterName, 'Start every TCP connection with a PROXY protocol header of this version (v1 or v2), as a load balancer does, to test a server or balancer that expects one. Its addresses are the connection''s own unless --proxy-source or --proxy-destination say otherwise')
            [CompletionResult]::new('--proxy-source', '--proxy-source', [CompletionResultType]::ParameterName, 'The client address the PROXY header claims (IP:PORT)')
            [CompletionResult]::new('--proxy-destination', '--proxy-destination', [CompletionResultType]::ParameterName, 'The destination address the PROXY header claims (IP:PORT)')
            [CompletionResult]::new('--io', '--io', [CompletionResultType]::ParameterName, 'I/O backend: natively auto (io_uring where the kernel allows it, else epoll), uring or epoll; in the wasm build auto (read and write) or splice (faster on wasmtime, traps on jco)')
            [CompletionResult]::new('--udp', '--udp', [CompletionResultType]::ParameterName, 'Echo UDP datagrams of --size bytes (at least 8: each begins with its sequence number; pingpong only), and count what the path did to them: lost, duplicated, reordered, corrupted, echoed late, and the round trips'' jitter')
            [CompletionResult]::new('--reset', '--reset', [CompletionResultType]::ParameterName, 'In connect mode, close each connection with a reset (SO_LINGER 0) instead of a FIN, so that this machine''s ports do not pile up in TIME_WAIT and the kernel''s search for a free one does not bound the rate. The wasm build cannot, and closes normally')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON: the end event alone (one object), or with --interval a stream of one event per line (start, interval..., end)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'echokit;report' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the merged report as one JSON object (an `end` event)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'echokit;check' {
            [CompletionResult]::new('--connect', '--connect', [CompletionResultType]::ParameterName, 'TCP echo endpoint to check: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT (default 127.0.0.1:7878 unless --udp-connect is given). Repeatable: the scenarios run against each in turn (the Nth --connect with the Nth --udp-connect), e.g. once over IPv4 and once over IPv6. Of a name''s several addresses, the first that answers is checked')
            [CompletionResult]::new('--udp-connect', '--udp-connect', [CompletionResultType]::ParameterName, 'UDP echo endpoint to check, as --connect; the UDP scenarios are skipped without it. Repeatable')
            [CompletionResult]::new('--only', '--only', [CompletionResultType]::ParameterName, 'Run only the scenarios matching PATTERN (a name; `*` matches anything). Repeatable')
            [CompletionResult]::new('--skip', '--skip', [CompletionResultType]::ParameterName, 'Leave out the scenarios matching PATTERN. Repeatable')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'The longest one scenario may take, in seconds')
            [CompletionResult]::new('--proxy-protocol', '--proxy-protocol', [CompletionResultType]::ParameterName, 'Start every TCP connection with a PROXY protocol header of this version (v1 or v2), as a load balancer does, to test a server or balancer that expects one. Its addresses are the connection''s own unless --proxy-source or --proxy-destination say otherwise')
            [CompletionResult]::new('--proxy-source', '--proxy-source', [CompletionResultType]::ParameterName, 'The client address the PROXY header claims (IP:PORT)')
            [CompletionResult]::new('--proxy-destination', '--proxy-destination', [CompletionResultType]::ParameterName, 'The destination address the PROXY header claims (IP:PORT)')
            [CompletionResult]::new('--io', '--io', [CompletionResultType]::ParameterName, 'I/O backend: natively auto (io_uring where the kernel allows it, else epoll), uring or epoll; in the wasm build auto (read and write) or splice (faster on wasmtime, traps on jco)')
            [CompletionResult]::new('--list', '--list', [CompletionResultType]::ParameterName, 'List the scenarios and what each proves, and exit')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object per scenario and a summary object (see docs/check.md)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Also say what each scenario measured on the way')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Also say what each scenario measured on the way')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'echokit;completions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'echokit;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Serve echo over TCP (default) and/or UDP: every byte received is sent back')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Send input to an echo server and check that it all comes back')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Load an echo server and check every echoed byte')
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Merge the histogram logs of bench runs (one machine or several) into one report')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Check that an echo endpoint (a server, or a proxy in front of one) keeps TCP and UDP echo intact')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script (bash, zsh, fish, powershell, elvish) on stdout')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'echokit;help;serve' {
            break
        }
        'echokit;help;send' {
            break
        }
        'echokit;help;bench' {
            break
        }
        'echokit;help;report' {
            break
        }
        'echokit;help;check' {
            break
        }
        'echokit;help;completions' {
            break
        }
        'echokit;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
