#!/usr/bin/env bash
# Fetches the Apache Kafka broker (KRaft) jars from Maven Central into a
# versioned cache folder, with the SLF4J binding the broker does not bring
# itself and a logging config. A second run finds the stamp and returns at once.
#
#   $ROLLBACKD_CACHE/kafka-$KAFKA_VERSION/libs/*.jar    classpath of kafka.Kafka
#   $ROLLBACKD_CACHE/kafka-$KAFKA_VERSION/log4j2.xml    (4.x; log4j.properties for 3.x)
#
# Maven's local repository (~/.m2) keeps the downloads, so a rebuild of this
# folder (e.g. after a version change) only fetches what is new.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${ROLLBACKD_CACHE:-$HOME/.cache/rollbackd}
out="$cache/kafka-$KAFKA_VERSION"
if [ -f "$out/.complete" ]; then
  echo "kafka: cached in $out"
  exit 0
fi
t0=$(date +%s)
log() { echo "kafka: $(date +%T) $*"; }
major=${KAFKA_VERSION%%.*}

work="$cache/build/kafka-$KAFKA_VERSION"
rm -rf "$work" "$out"
mkdir -p "$work" "$out"

# pom <extra dependency xml>: a throw-away project depending on the broker.
pom() {
  cat > "$work/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>rollbackd.local</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$KAFKA_SCALA</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
$1
  </dependencies>
</project>
EOF
}
# Maven 3.8's jansi prints stray colour resets even with -q: strip them.
mvnq() { mvn -B -q -Dstyle.color=never "$@" 2>&1 | sed 's/\x1b\[[0-9;]*m//g'; }
dep() { printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' "$1" "$2" "$3"; }

# Pass 1: which logging versions does the broker pull in?
log "resolving org.apache.kafka:kafka_$KAFKA_SCALA:$KAFKA_VERSION"
pom ""
(cd "$work" && mvnq dependency:list -DincludeScope=runtime -DoutputFile="$work/deps.txt")
depver() { # groupId artifactId -> version from deps.txt (empty when absent)
  sed -nE "s/^ *$1:$2:jar:([^:]+):.*/\1/p" "$work/deps.txt" | head -n1
}

# Pass 2: broker + binding, copied into libs/.
if [ "$major" -ge 4 ]; then
  # 4.x logs with log4j2 but talks SLF4J 1.7: bridge it at log4j's own version.
  log4j=$(depver org.apache.logging.log4j log4j-core)
  [ -n "$log4j" ] || { echo "kafka: no log4j-core among the broker's dependencies" >&2; exit 1; }
  pom "$(dep org.apache.logging.log4j log4j-slf4j-impl "$log4j")"
else
  # 3.x: reload4j (log4j 1.2 API) behind SLF4J.
  slf4j=$(depver org.slf4j slf4j-api)
  [ -n "$slf4j" ] || { echo "kafka: no slf4j-api among the broker's dependencies" >&2; exit 1; }
  reload4j=$(depver ch.qos.reload4j reload4j)
  pom "$(dep org.slf4j slf4j-reload4j "$slf4j")$(dep ch.qos.reload4j reload4j "${reload4j:-1.2.25}")"
fi
log "copying runtime jars"
(cd "$work" && mvnq dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/libs")

if [ "$major" -ge 4 ]; then
  # XML keeps the config free of extra readers. shutdownHook="disable": log4j's
  # own hook would otherwise stop logging while the broker is still shutting down.
  cat > "$out/log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="stdout"/></Root>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
  </Loggers>
</Configuration>
EOF
else
  cat > "$out/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
EOF
fi

n=$(find "$out/libs" -name '*.jar' | wc -l)
[ "$n" -gt 10 ] || { echo "kafka: only $n jars in $out/libs" >&2; exit 1; }
ls "$out/libs" | grep -q "^kafka_$KAFKA_SCALA-$KAFKA_VERSION.jar$" \
  || { echo "kafka: kafka_$KAFKA_SCALA-$KAFKA_VERSION.jar missing from $out/libs" >&2; exit 1; }
echo "$KAFKA_VERSION scala $KAFKA_SCALA $(date -u +%FT%TZ)" > "$out/.complete"
rm -rf "$work"
log "installed $n jars in $out in $(( $(date +%s) - t0 ))s"
