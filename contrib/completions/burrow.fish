# fish completion for burrow. `just install` puts it in
# PREFIX/share/fish/vendor_completions.d/burrow.fish; to try it: source contrib/completions/burrow.fish
#
# Hand-written: every subcommand and every flag. tests/completions.rs checks that each flag
# `burrow SUB --help` lists is in the `# burrow SUB` section below (and in burrow.bash and
# _burrow), so a new flag without a completion fails the tests. -x: the flag takes a value that
# is not a file; -r -F: a file.

set -l commands proxy connect server client demo run check help

# No file names unless a flag or argument asks for them.
complete -c burrow -f
complete -c burrow -n "not __fish_seen_subcommand_from $commands" -l help -d 'display usage information'
complete -c burrow -n "not __fish_seen_subcommand_from $commands" -a proxy -d 'HTTP/1.1 forward proxy (CONNECT and absolute-form)'
complete -c burrow -n "not __fish_seen_subcommand_from $commands" -a connect -d 'join stdin/stdout to HOST:PORT through a CONNECT chain'
complete -c burrow -n "not __fish_seen_subcommand_from $commands" -a server -d 'the relay that tunnel clients connect to'
complete -c burrow -n "not __fish_seen_subcommand_from $commands" -a client -d 'the tunnel client: dials the relay'
complete -c burrow -n "not __fish_seen_subcommand_from $commands" -a demo -d 'everything on loopback in one process'
complete -c burrow -n "not __fish_seen_subcommand_from $commands" -a run -d 'run the roles a config file declares'
complete -c burrow -n "not __fish_seen_subcommand_from $commands" -a check -d 'validate a config file'
complete -c burrow -n "not __fish_seen_subcommand_from $commands" -a help -d 'display usage information'
complete -c burrow -n "__fish_seen_subcommand_from help" -a "proxy connect server client demo run check"

# burrow proxy
set -l c '__fish_seen_subcommand_from proxy'
complete -c burrow -n $c -l listen -x -d 'address to listen on (default 127.0.0.1:3128)'
complete -c burrow -n $c -l upstream -x -a 'env http:// socks5://' -d 'upstream proxy URL; repeat for a chain'
complete -c burrow -n $c -l auth -x -d 'require Basic credentials USER:PASS'
complete -c burrow -n $c -l allow -x -d 'allow only targets matching RULE'
complete -c burrow -n $c -l deny -x -d 'refuse targets matching RULE'
complete -c burrow -n $c -l connect-timeout -x -d 'limit for reaching a target'
complete -c burrow -n $c -l idle-timeout -x -d 'close connections idle this long'
complete -c burrow -n $c -l head-timeout -x -d 'the request head must arrive within this'
complete -c burrow -n $c -l max-connections -x -d 'most connections served at once'
complete -c burrow -n $c -l drain-timeout -x -d 'on SIGINT/SIGTERM, let connections finish for this long'
complete -c burrow -n $c -l open -d 'allow a non-loopback listener without --auth or --allow'
complete -c burrow -n $c -l resolve-names -d 'resolve target names here and check the rules on every address'
complete -c burrow -n $c -l config -r -F -d 'read [proxy] from a config file (flags override it)'
complete -c burrow -n $c -l help -d 'display usage information'

# burrow connect
set -l c '__fish_seen_subcommand_from connect'
complete -c burrow -n $c -l via -x -a 'env http:// socks5://' -d 'proxy URL to go through; repeat for a chain'
complete -c burrow -n $c -l connect-timeout -x -d 'limit for reaching the target'
complete -c burrow -n $c -l help -d 'display usage information'
complete -c burrow -n $c -a '(__fish_print_hostnames)' -d 'target host'

# burrow server
set -l c '__fish_seen_subcommand_from server'
complete -c burrow -n $c -l listen -x -d 'address to listen on (default 0.0.0.0:8080)'
complete -c burrow -n $c -l token -x -d 'token clients must present'
complete -c burrow -n $c -l no-auth -d 'accept clients without a token'
complete -c burrow -n $c -l allow-ports -x -d 'ports clients may bind with -R (N or N-M)'
complete -c burrow -n $c -l allow -x -d 'allow -L targets matching RULE only'
complete -c burrow -n $c -l deny -x -d 'refuse -L targets matching RULE'
complete -c burrow -n $c -l keepalive -x -d 'websocket ping interval'
complete -c burrow -n $c -l drain-timeout -x -d 'on SIGINT/SIGTERM, let streams finish for this long'
complete -c burrow -n $c -l lame-duck -x -d 'on SIGTERM, answer /readyz 503 but keep serving this long'
complete -c burrow -n $c -l max-streams -x -d 'most streams per session'
complete -c burrow -n $c -l grace -x -d "how long a disconnected client's session is held"
complete -c burrow -n $c -l udp-idle-timeout -x -d 'end a UDP flow with no datagram either way for this long'
complete -c burrow -n $c -l no-resume -d 'do not resume sessions'
complete -c burrow -n $c -l connect-timeout -x -d 'limit for dialing a -L target'
complete -c burrow -n $c -l tls-cert -r -F -d 'serve wss:// with this certificate chain (PEM)'
complete -c burrow -n $c -l tls-key -r -F -d 'the private key (PEM) for --tls-cert'
complete -c burrow -n $c -l max-connections -x -d 'most connections at the public port'
complete -c burrow -n $c -l max-sessions -x -d 'most tunnel sessions at once'
complete -c burrow -n $c -l max-sessions-per-token -x -d 'most sessions with one token'
complete -c burrow -n $c -l max-streams-total -x -d 'most streams of all sessions at once'
complete -c burrow -n $c -l max-dials -x -d 'most -L targets being dialed at once'
complete -c burrow -n $c -l admin -x -d 'serve /healthz, /metrics and /status on ADDR'
complete -c burrow -n $c -l open-admin -d 'allow --admin on a non-loopback address'
complete -c burrow -n $c -l admin-token -x -d 'bearer token for the admin pages'
complete -c burrow -n $c -l config -r -F -d 'read [relay] from a config file (flags override it)'
complete -c burrow -n $c -l help -d 'display usage information'

# burrow client
set -l c '__fish_seen_subcommand_from client'
complete -c burrow -n $c -s L -l local -x -d 'local forward: [BIND:]PORT:HOST:PORT, stdio:HOST:PORT or PORT:proxy'
complete -c burrow -n $c -s R -l remote -x -d 'remote forward on the relay: [BIND:]PORT:HOST:PORT, PORT:proxy or udp:[BIND:]PORT:HOST:PORT'
complete -c burrow -n $c -l token -x -d 'token for the relay'
complete -c burrow -n $c -l keepalive -x -d 'websocket ping interval'
complete -c burrow -n $c -l via -x -a 'env http:// socks5://' -d 'proxy (http:// or socks5://) on the way to the relay'
complete -c burrow -n $c -l allow -x -d 'what -R proxy visitors may reach: allow only RULE'
complete -c burrow -n $c -l deny -x -d 'what -R proxy visitors may reach: refuse RULE'
complete -c burrow -n $c -l proxy-auth -x -d 'credentials USER:PASS visitors of a proxy forward must present'
complete -c burrow -n $c -l open -d 'allow a proxy forward without --proxy-auth'
complete -c burrow -n $c -l max-streams -x -d 'most streams on the session'
complete -c burrow -n $c -l connect-timeout -x -d 'limit for reaching the relay or a target'
complete -c burrow -n $c -l drain-timeout -x -d 'on SIGINT/SIGTERM, let streams finish for this long'
complete -c burrow -n $c -l ca -r -F -d 'trust this CA (PEM) for wss://'
complete -c burrow -n $c -l insecure -d "do not verify the relay's certificate"
complete -c burrow -n $c -l status -x -d 'serve /readyz, /healthz and /metrics on ADDR'
complete -c burrow -n $c -l ready -x -a 'all any' -d 'with several relays, /readyz waits for all or any'
complete -c burrow -n $c -l no-resume -d 'do not resume the session after a dropped connection'
complete -c burrow -n $c -l pool -x -d 'share each -R port with the clients of this token and pool'
complete -c burrow -n $c -l udp-idle-timeout -x -d 'end a UDP flow with no datagram either way for this long'
complete -c burrow -n $c -l ready -x -a 'all any' -d 'when /readyz is 200 with several relays'
complete -c burrow -n $c -l config -r -F -d 'read the [[client]] from a config file (flags override it)'
complete -c burrow -n $c -l help -d 'display usage information'
complete -c burrow -n $c -a 'ws:// wss://' -d 'relay URL'

# burrow demo
set -l c '__fish_seen_subcommand_from demo'
complete -c burrow -n $c -l help -d 'display usage information'

# burrow run
set -l c '__fish_seen_subcommand_from run'
complete -c burrow -n $c -l help -d 'display usage information'
complete -c burrow -n $c -F -d 'config file (TOML)'

# burrow check
set -l c '__fish_seen_subcommand_from check'
complete -c burrow -n $c -l help -d 'display usage information'
complete -c burrow -n $c -F -d 'config file (TOML)'

# end of subcommands
