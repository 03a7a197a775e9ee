# Shared by the benchmarks: the 20 jails' rules and moat's configuration for them.
#
# Each jail: NAME|what follows the `[date] ` field of an nginx combined line. The first is the
# Portainer rule (moat's built-in `portainer` filter has this same regex). The others are the
# usual scanner and auth-failure jails; some match nothing in moat-genlog's log, as in real
# configurations. Rules may overlap (a /cgi-bin/luci probe is also a 404): jails are
# independent, each line is offered to every jail.
# shellcheck shell=bash

JAILS=(
    'portainer|"POST /api/auth(?:\?[^" ]*)? HTTP/[0-9.]+" 422 '
    'wp-login|"(?:GET|POST) /wp-login\.php[^"]*" 404 '
    'dotenv|"GET /\.env[^"]*" 404 '
    'phpmyadmin|"GET /phpmyadmin/[^"]*" 404 '
    'xmlrpc|"(?:GET|POST) /xmlrpc\.php[^"]*" 404 '
    'admin-config|"GET /admin/config\.php[^"]*" 404 '
    'git-config|"GET /\.git/config[^"]*" 404 '
    'luci|"GET /cgi-bin/luci[^"]*" 404 '
    'boaform|"GET /boaform/admin/formLogin[^"]*" 404 '
    'cgi-bin|"GET /cgi-bin/[^"]*" 404 '
    'http-404|"[A-Z]+ [^"]*" 404 '
    'login-401|"POST /login[^"]*" 401 '
    'basic-auth-401|"[A-Z]+ [^"]*" 401 '
    'forbidden-403|"[A-Z]+ [^"]*" 403 '
    'bad-request-400|"[^"]*" 400 '
    'rate-limit-429|"[A-Z]+ [^"]*" 429 '
    'gitea|"POST /user/login[^"]*" 200 \d+ "[^"]*/user/login'
    'jenkins|"POST /j_spring_security_check[^"]*" 302 '
    'api-auth-get|"GET /api/auth[^"]*" 4\d\d '
    'shellshock|"[^"]*" \d+ \d+ "[^"]*" "\(\) \{'
)
((${#JAILS[@]} == 20)) || die "expected 20 jails, have ${#JAILS[@]}"

moat_re() { printf '%s' '^<HOST> \S+ \S+ \[(?P<time>[^\]]+)\] '"$1"; }

# write_moat_config FILE JAIL...: the jails reading $LOG, with EXTRA_DEFAULTS (lines) added to
# [defaults] and EXTRA_TOP (lines) before it.
write_moat_config() { # FILE JAIL...
    local file=$1 j
    shift
    {
        [[ -n ${EXTRA_TOP:-} ]] && printf '%s\n\n' "$EXTRA_TOP"
        echo '[defaults]'
        echo 'maxretry = 5'
        printf 'findtime = "%s"\n' "${FINDTIME:-10m}"
        echo 'bantime = "1h"'
        echo 'time = "clf"'
        echo 'ipv6_prefix = 128'
        [[ -n ${EXTRA_DEFAULTS:-} ]] && printf '%s\n' "$EXTRA_DEFAULTS"
        for j in "$@"; do
            printf '\n[jails.%s]\n' "${j%%|*}"
            printf "failregex = ['%s']\n" "$(moat_re "${j#*|}")"
            printf 'sources = ["%s"]\n' "$LOG"
        done
    } >"$file"
}

# fail2ban: the date is cut out of the line before matching (hence `\[\]`); <ADDR> is an IP
# (never a DNS name); its ini reader strips trailing blanks, so a final space becomes \s.
f2b_re() {
    local re='^<ADDR> \S+ \S+ \[\] '"$1"
    [[ $re == *' ' ]] && re="${re% }\\s"
    printf '%s' "$re"
}

# write_f2b_filter FILE JAIL...: one fail2ban filter holding the jails' failregexes.
write_f2b_filter() { # FILE JAIL...
    local file=$1 j first=1
    shift
    {
        echo '[Definition]'
        for j in "$@"; do
            if ((first)); then
                printf 'failregex = %s\n' "$(f2b_re "${j#*|}")"
                first=0
            else
                printf '            %s\n' "$(f2b_re "${j#*|}")"
            fi
        done
        echo 'ignoreregex ='
        # fail2ban's fast setup for access logs: find the date right after the first `[`.
        echo 'datepattern = ^[^\[]*\[({DATE})'
    } >"$file"
}
