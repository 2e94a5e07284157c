# bash completion for burrow. `just install` puts it in
# PREFIX/share/bash-completion/completions/burrow; to try it: source contrib/completions/burrow.bash
#
# Hand-written: every subcommand and every flag. tests/completions.rs checks that each flag
# `burrow SUB --help` lists is in the `# burrow SUB` section below (and in _burrow and
# burrow.fish), so a new flag without a completion fails the tests.

# _burrow_files [GLOB]: file names (and directories, to descend into) for the current word;
# with GLOB, only files matching it.
_burrow_files() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    compopt -o filenames 2>/dev/null
    if [[ -n ${1:-} ]]; then
        mapfile -t COMPREPLY < <(compgen -f -X "!$1" -- "$cur"; compgen -d -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}

_burrow() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local commands="proxy connect server client demo run check help"
    local sub="" i
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            proxy | connect | server | client | demo | run | check | help)
                sub=${COMP_WORDS[i]}
                break
                ;;
        esac
    done
    if [[ -z $sub ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$commands --help" -- "$cur")
        return
    fi

    # The value of the flag just typed.
    case $prev in
        --config | --tls-cert | --tls-key | --ca)
            _burrow_files
            return
            ;;
        --ready)
            mapfile -t COMPREPLY < <(compgen -W "all any" -- "$cur")
            return
            ;;
        --upstream | --via)
            # A URL, or `env` for HTTPS_PROXY and NO_PROXY.
            mapfile -t COMPREPLY < <(compgen -W "env http:// socks5://" -- "$cur")
            compopt -o nospace 2>/dev/null
            return
            ;;
        --listen | --auth | --allow | --deny | --connect-timeout | --idle-timeout | \
            --head-timeout | --max-connections | --drain-timeout | --token | --allow-ports | \
            --keepalive | --max-streams | --grace | --max-sessions | --max-sessions-per-token | \
            --max-streams-total | --max-dials | --admin | --admin-token | -L | --local | -R | \
            --remote | --proxy-auth | --status | --lame-duck | --udp-idle-timeout)
            # A value to type: nothing to offer.
            return
            ;;
    esac

    local opts=""
    case $sub in
        # burrow proxy
        proxy)
            opts="--listen --upstream --auth --allow --deny --connect-timeout --idle-timeout
                --head-timeout --max-connections --drain-timeout --open --resolve-names
                --config --help"
            ;;
        # burrow connect
        connect)
            opts="--via --connect-timeout --help"
            ;;
        # burrow server
        server)
            opts="--listen --token --no-auth --allow-ports --allow --deny --keepalive
                --drain-timeout --max-streams --grace --no-resume --connect-timeout --tls-cert
                --tls-key --max-connections --max-sessions --max-sessions-per-token
                --max-streams-total --max-dials --admin --open-admin --admin-token --config
                --lame-duck --udp-idle-timeout --help"
            ;;
        # burrow client
        client)
            opts="-L --local -R --remote --token --keepalive --via --allow --deny --proxy-auth
                --open --max-streams --connect-timeout --drain-timeout --ca --insecure --status
                --no-resume --pool --ready --udp-idle-timeout --config --help"
            ;;
        # burrow demo
        demo)
            opts="--help"
            ;;
        # burrow run
        run)
            opts="--help"
            ;;
        # burrow check
        check)
            opts="--help"
            ;;
        # end of subcommands
    esac

    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
        return
    fi
    case $sub in
        run | check)
            # FILE: the config file.
            _burrow_files '*.toml'
            ;;
        client)
            mapfile -t COMPREPLY < <(compgen -W "ws:// wss://" -- "$cur")
            compopt -o nospace 2>/dev/null
            ;;
        help)
            mapfile -t COMPREPLY < <(compgen -W "${commands% help}" -- "$cur")
            ;;
    esac
}

complete -F _burrow burrow
