#!/usr/bin/perl
# A custom-runtime worker in Perl: speaks the Switchyard worker protocol (docs/worker-protocol.md)
# on stdin/stdout. Echoes the event back; anything printed to STDERR is the invocation's log.
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
    my $reply = { type => 'result', seq => $msg->{seq}, ok => JSON::PP::true,
                  response => { status => 200, headers => { 'content-type' => 'application/json' },
                                body => $json->encode({ echo => $msg->{event}, runtime => 'perl' }) } };
    print STDERR "\x1eSWITCHYARD-END $msg->{seq}\n";
    send_frame($reply);
}
