#!/usr/bin/perl
# A custom-runtime worker in Perl: speaks the Switchyard worker protocol (docs/worker-protocol.md)
# on stdin/stdout. Echoes the event back; anything printed to STDERR is the invocation's log. For
# the tests, an event {"do": X} crashes (exit 3), sleeps, hogs memory, fails, or prints its env.
use strict;
use warnings;
use JSON::PP;

binmode(STDIN);
binmode(STDOUT);
$| = 1;
my $json = JSON::PP->new->utf8->canonical;

sub read_exact {
    my ($n) = @_;
    my $buf = '';
    while (length($buf) < $n) {
        my $got = read(STDIN, $buf, $n - length($buf), length($buf));
        return undef if !$got;
    }
    return $buf;
}

sub send_frame {
    my ($msg) = @_;
    my $body = $json->encode($msg);
    print STDOUT pack('N', length($body)) . $body;
}

send_frame({ type => 'ready', pid => $$ });
while (defined(my $head = read_exact(4))) {
    my $body = read_exact(unpack('N', $head));
    last if !defined $body;
    my $msg = $json->decode($body);
    next if $msg->{type} ne 'invoke';
    print STDERR "perl worker handling $msg->{context}{id}\n";
    # Behaviours for the tests, chosen by the event's "do".
    my $do = ref($msg->{event}) eq 'HASH' ? ($msg->{event}{do} // '') : '';
    exit(3) if $do eq 'crash';
    sleep(60) if $do eq 'sleep';
    if ($do eq 'hog') {
        my @chunks;
        push @chunks, 'x' x (1 << 20) while 1;
    }
    my $reply;
    if ($do eq 'fail') {
        $reply = { type => 'result', seq => $msg->{seq}, ok => JSON::PP::false,
                   error => { type => 'PerlError', message => 'perl says no', traceback => '', permanent => JSON::PP::true } };
    } else {
        my $body = $do eq 'env'
            ? { secret => $ENV{SWITCHYARD_TEST_SECRET}, declared => $ENV{GREETING}, pid => $$ }
            : { echo => $msg->{event}, runtime => 'perl' };
        $reply = { type => 'result', seq => $msg->{seq}, ok => JSON::PP::true,
                   response => { status => 200, headers => { 'content-type' => 'application/json' },
                                 body => $json->encode($body) } };
    }
    print STDERR "\x1eSWITCHYARD-END $msg->{seq}\n";
    send_frame($reply);
}
