# nginx's location for Grafana under /grafana/ on the public port. Grafana's
# UI loads scripts and styles from itself, so this location relaxes the API's
# `default-src 'none'`; it repeats every other header of the server, since
# nginx drops inherited add_header lines where a location has its own.
#
# Plain Nix with no nixpkgs: the test command runs `nginx -t` with it.
{ port ? 3000 }:
''
  location /grafana/ {
      proxy_pass http://127.0.0.1:${toString port};
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      add_header Strict-Transport-Security "max-age=63072000" always;
      add_header X-Content-Type-Options "nosniff" always;
      add_header X-Frame-Options "DENY" always;
      add_header Referrer-Policy "no-referrer" always;
      add_header Content-Security-Policy "default-src 'self'; script-src 'self' 'unsafe-eval' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'" always;
  }
''
