// Deliberately wrong Verilog for the yosys error-path workload: the parser
// rejects it, yosys prints an ERROR line and exits non-zero.
module broken (input wire a, output wire y);
    assign y = a &;
endmodule
