# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_echokit_global_optspecs
    string join \n h/help V/version
end

function __fish_echokit_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_echokit_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_echokit_using_subcommand
    set -l cmd (__fish_echokit_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c echokit -n "__fish_echokit_needs_command" -s h -l help -d 'Print help'
complete -c echokit -n "__fish_echokit_needs_command" -s V -l version -d 'Print version'
complete -c echokit -n "__fish_echokit_needs_command" -f -a "serve" -d 'Serve echo over TCP (default) and/or UDP: every byte received is sent back'
complete -c echokit -n "__fish_echokit_needs_command" -f -a "send" -d 'Send input to an echo server and check that it all comes back'
complete -c echokit -n "__fish_echokit_needs_command" -f -a "bench" -d 'Load an echo server and check every echoed byte'
complete -c echokit -n "__fish_echokit_needs_command" -f -a "report" -d 'Merge the histogram logs of bench runs (one machine or several) into one report'
complete -c echokit -n "__fish_echokit_needs_command" -f -a "check" -d 'Check that an echo endpoint (a server, or a proxy in front of one) keeps TCP and UDP echo intact'
complete -c echokit -n "__fish_echokit_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, powershell, elvish) on stdout'
complete -c echokit -n "__fish_echokit_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l listen -d 'Address to listen on: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT, a name listened on at every address it resolves to. Repeatable: every address is served by the same event loop(s). An IPv6 address, [::] included, is IPv6 only: add 0.0.0.0:PORT for IPv4. Port 0 picks a free port; later port-0 addresses take the port the first one got when it is free there. Prints "listening on IP:PORT" once per address, in order, once all are bound' -r
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l backlog -d 'Length of the queue of connections waiting to be accepted' -r
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l max-connections -d 'Connections served at once; further ones are closed as soon as accepted' -r
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l idle-timeout -d 'Close connections that move no byte for this many seconds (fractions allowed)' -r
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l udp-peer-rate -d 'UDP datagrams per second echoed to one source IP address; the excess is dropped. `off` for no bound. The default is above what `echokit bench --udp` reaches' -r
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l workers -d 'Event loops (threads), each serving every listener; default: one per core. The WebAssembly build has no threads and always runs one' -r
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l shutdown-timeout -d 'On SIGINT or SIGTERM, stop accepting and give open connections this many seconds to finish their echo before closing them (native build; a second signal exits at once)' -r
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l proxy-protocol -d 'Every TCP connection must start with a PROXY protocol header (HAProxy\'s, as load balancers send it with the real client\'s address) of this version: v1 (text), v2 (binary) or any. The header is consumed, never echoed; a connection whose header is missing, invalid or late is closed unechoed, its reason counted. -v logs each header. With --udp, every datagram must start with a v2 DGRAM (or LOCAL) header, stripped before the echo; datagrams without one are dropped and counted' -r
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l proxy-header-timeout -d 'Seconds a connection may take to send its whole PROXY header (with --proxy-protocol)' -r
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l io -d 'I/O backend: natively auto (io_uring where the kernel allows it, else epoll), uring or epoll; in the wasm build auto (read and write) or splice (faster on wasmtime, traps on jco)' -r -f -a "auto\t'The fastest the host lets this process set up'
epoll\t'Readiness from epoll (native)'
uring\t'Completions from io_uring (Linux)'
splice\t'The WebAssembly build, echoing with `output-stream.splice`: the bytes stay in the runtime (faster on wasmtime; jco 1.35 traps)'"
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l tcp -d 'Serve TCP echo (the default when neither --tcp nor --udp is given)'
complete -c echokit -n "__fish_echokit_using_subcommand serve" -l udp -d 'Serve UDP echo; with --tcp too, both on the same address and port. Datagrams from source ports below 1024 and from peers in an echo loop are dropped (see docs/security.md)'
complete -c echokit -n "__fish_echokit_using_subcommand serve" -s v -l verbose -d 'Log every connection\'s open and close (peer, bytes echoed, duration) to stderr'
complete -c echokit -n "__fish_echokit_using_subcommand serve" -s q -l quiet -d 'Print nothing on stderr, not even errors (the "listening on" line stays)'
complete -c echokit -n "__fish_echokit_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c echokit -n "__fish_echokit_using_subcommand send" -l connect -d 'Echo server to connect to: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT. Of a name\'s several addresses, the first that answers is used, in the resolver\'s order' -r
complete -c echokit -n "__fish_echokit_using_subcommand send" -l input -d 'File to send; "-" reads standard input' -r -F
complete -c echokit -n "__fish_echokit_using_subcommand send" -l output -d 'File to write the echo to; "-" writes standard output' -r -F
complete -c echokit -n "__fish_echokit_using_subcommand send" -l datagram-size -d 'Bytes per datagram (with --udp; at most 65507)' -r
complete -c echokit -n "__fish_echokit_using_subcommand send" -l timeout -d 'Seconds to wait for each datagram\'s echo before sending it again (with --udp)' -r
complete -c echokit -n "__fish_echokit_using_subcommand send" -l retries -d 'How many times a datagram is sent again before it counts as lost (with --udp)' -r
complete -c echokit -n "__fish_echokit_using_subcommand send" -l proxy-protocol -d 'Start every TCP connection with a PROXY protocol header of this version (v1 or v2), as a load balancer does, to test a server or balancer that expects one. Its addresses are the connection\'s own unless --proxy-source or --proxy-destination say otherwise' -r
complete -c echokit -n "__fish_echokit_using_subcommand send" -l proxy-source -d 'The client address the PROXY header claims (IP:PORT)' -r
complete -c echokit -n "__fish_echokit_using_subcommand send" -l proxy-destination -d 'The destination address the PROXY header claims (IP:PORT)' -r
complete -c echokit -n "__fish_echokit_using_subcommand send" -l io -d 'I/O backend: natively auto (io_uring where the kernel allows it, else epoll), uring or epoll; in the wasm build auto (read and write) or splice (faster on wasmtime, traps on jco)' -r -f -a "auto\t'The fastest the host lets this process set up'
epoll\t'Readiness from epoll (native)'
uring\t'Completions from io_uring (Linux)'
splice\t'The WebAssembly build, echoing with `output-stream.splice`: the bytes stay in the runtime (faster on wasmtime; jco 1.35 traps)'"
complete -c echokit -n "__fish_echokit_using_subcommand send" -l udp -d 'Send over UDP, one datagram at a time, each waiting for its echo'
complete -c echokit -n "__fish_echokit_using_subcommand send" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l connect -d 'Echo server to load: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT. Of a name\'s several addresses, the first that answers is loaded, in the resolver\'s order' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l connections -d 'Connections kept open at once (in connect mode: connections in flight at once, at most)' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l size -d 'Message size in bytes; in stream mode, the write size (at most 64 KiB is used)' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l duration -d 'How long to measure, in seconds (fractions allowed), after the warm-up' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l warmup -d 'Load for this long first, excluded from every figure' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l mode -d 'Traffic shape' -r -f -a "pingpong\t'Write a message, read its echo, repeat'
stream\t'Write continuously while reading the echo (full-duplex throughput)'
connect\t'Connect, echo one message, close, repeat (the accept path)'"
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l rate -d 'Open loop: send N messages per second in all, spread evenly over the connections, whatever the echoes do (several in flight per connection); latency counts from each message\'s scheduled send. In connect mode: N new connections per second. Default: closed loop' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l pipeline -d 'Open loop: at most N messages in flight on one connection; the next ones wait in the load generator and are written late (counted as late; their corrected latency includes the wait)' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l connect-rate -d 'Open the connections at N per second instead of all at once (not in connect mode); the report says when the last was up' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l bind -d 'Source addresses, connections spread evenly over them (each has its own ephemeral ports; loopback has all of 127.0.0.0/8). Each must be an address of this host. A host name stands for its addresses of the server\'s family' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l interval -d 'Report each interval of this many seconds: a line on stderr, or with --json a JSON event on stdout' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l histogram-log -d 'Write the latency histograms of every interval (1 s without --interval) to FILE as an HdrHistogram interval log, for `echokit report` to merge. The wasm build needs the directory granted (`wasmtime run --dir`)' -r -F
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l loss-timeout -d 'With --udp: a datagram not echoed within SECS counts as lost. Default: twice the smoothed round trip plus four times its variation (as TCP\'s retransmission timeout), 0.2 s to 10 s, 1 s before the first echo' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l proxy-protocol -d 'Start every TCP connection with a PROXY protocol header of this version (v1 or v2), as a load balancer does, to test a server or balancer that expects one. Its addresses are the connection\'s own unless --proxy-source or --proxy-destination say otherwise' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l proxy-source -d 'The client address the PROXY header claims (IP:PORT)' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l proxy-destination -d 'The destination address the PROXY header claims (IP:PORT)' -r
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l io -d 'I/O backend: natively auto (io_uring where the kernel allows it, else epoll), uring or epoll; in the wasm build auto (read and write) or splice (faster on wasmtime, traps on jco)' -r -f -a "auto\t'The fastest the host lets this process set up'
epoll\t'Readiness from epoll (native)'
uring\t'Completions from io_uring (Linux)'
splice\t'The WebAssembly build, echoing with `output-stream.splice`: the bytes stay in the runtime (faster on wasmtime; jco 1.35 traps)'"
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l udp -d 'Echo UDP datagrams of --size bytes (at least 8: each begins with its sequence number; pingpong only), and count what the path did to them: lost, duplicated, reordered, corrupted, echoed late, and the round trips\' jitter'
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l reset -d 'In connect mode, close each connection with a reset (SO_LINGER 0) instead of a FIN, so that this machine\'s ports do not pile up in TIME_WAIT and the kernel\'s search for a free one does not bound the rate. The wasm build cannot, and closes normally'
complete -c echokit -n "__fish_echokit_using_subcommand bench" -l json -d 'Print JSON: the end event alone (one object), or with --interval a stream of one event per line (start, interval..., end)'
complete -c echokit -n "__fish_echokit_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c echokit -n "__fish_echokit_using_subcommand report" -l json -d 'Print the merged report as one JSON object (an `end` event)'
complete -c echokit -n "__fish_echokit_using_subcommand report" -s h -l help -d 'Print help'
complete -c echokit -n "__fish_echokit_using_subcommand check" -l connect -d 'TCP echo endpoint to check: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT (default 127.0.0.1:7878 unless --udp-connect is given). Repeatable: the scenarios run against each in turn (the Nth --connect with the Nth --udp-connect), e.g. once over IPv4 and once over IPv6. Of a name\'s several addresses, the first that answers is checked' -r
complete -c echokit -n "__fish_echokit_using_subcommand check" -l udp-connect -d 'UDP echo endpoint to check, as --connect; the UDP scenarios are skipped without it. Repeatable' -r
complete -c echokit -n "__fish_echokit_using_subcommand check" -l only -d 'Run only the scenarios matching PATTERN (a name; `*` matches anything). Repeatable' -r
complete -c echokit -n "__fish_echokit_using_subcommand check" -l skip -d 'Leave out the scenarios matching PATTERN. Repeatable' -r
complete -c echokit -n "__fish_echokit_using_subcommand check" -l timeout -d 'The longest one scenario may take, in seconds' -r
complete -c echokit -n "__fish_echokit_using_subcommand check" -l proxy-protocol -d 'Start every TCP connection with a PROXY protocol header of this version (v1 or v2), as a load balancer does, to test a server or balancer that expects one. Its addresses are the connection\'s own unless --proxy-source or --proxy-destination say otherwise' -r
complete -c echokit -n "__fish_echokit_using_subcommand check" -l proxy-source -d 'The client address the PROXY header claims (IP:PORT)' -r
complete -c echokit -n "__fish_echokit_using_subcommand check" -l proxy-destination -d 'The destination address the PROXY header claims (IP:PORT)' -r
complete -c echokit -n "__fish_echokit_using_subcommand check" -l io -d 'I/O backend: natively auto (io_uring where the kernel allows it, else epoll), uring or epoll; in the wasm build auto (read and write) or splice (faster on wasmtime, traps on jco)' -r -f -a "auto\t'The fastest the host lets this process set up'
epoll\t'Readiness from epoll (native)'
uring\t'Completions from io_uring (Linux)'
splice\t'The WebAssembly build, echoing with `output-stream.splice`: the bytes stay in the runtime (faster on wasmtime; jco 1.35 traps)'"
complete -c echokit -n "__fish_echokit_using_subcommand check" -l list -d 'List the scenarios and what each proves, and exit'
complete -c echokit -n "__fish_echokit_using_subcommand check" -l json -d 'Print one JSON object per scenario and a summary object (see docs/check.md)'
complete -c echokit -n "__fish_echokit_using_subcommand check" -s v -l verbose -d 'Also say what each scenario measured on the way'
complete -c echokit -n "__fish_echokit_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c echokit -n "__fish_echokit_using_subcommand completions" -s h -l help -d 'Print help'
complete -c echokit -n "__fish_echokit_using_subcommand help; and not __fish_seen_subcommand_from serve send bench report check completions help" -f -a "serve" -d 'Serve echo over TCP (default) and/or UDP: every byte received is sent back'
complete -c echokit -n "__fish_echokit_using_subcommand help; and not __fish_seen_subcommand_from serve send bench report check completions help" -f -a "send" -d 'Send input to an echo server and check that it all comes back'
complete -c echokit -n "__fish_echokit_using_subcommand help; and not __fish_seen_subcommand_from serve send bench report check completions help" -f -a "bench" -d 'Load an echo server and check every echoed byte'
complete -c echokit -n "__fish_echokit_using_subcommand help; and not __fish_seen_subcommand_from serve send bench report check completions help" -f -a "report" -d 'Merge the histogram logs of bench runs (one machine or several) into one report'
complete -c echokit -n "__fish_echokit_using_subcommand help; and not __fish_seen_subcommand_from serve send bench report check completions help" -f -a "check" -d 'Check that an echo endpoint (a server, or a proxy in front of one) keeps TCP and UDP echo intact'
complete -c echokit -n "__fish_echokit_using_subcommand help; and not __fish_seen_subcommand_from serve send bench report check completions help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, powershell, elvish) on stdout'
complete -c echokit -n "__fish_echokit_using_subcommand help; and not __fish_seen_subcommand_from serve send bench report check completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
