// A small design for the yosys workload: a UART transmitter fed by a
// pseudo-random generator and a little ALU, with a finite state machine and
// a memory, so that synthesis runs the FSM, memory, arithmetic and ABC passes.

module lfsr16 (
    input  wire        clk,
    input  wire        rst,
    input  wire        step,
    output reg  [15:0] value
);
    always @(posedge clk)
        if (rst)
            value <= 16'hACE1;
        else if (step)
            value <= {value[14:0], value[15] ^ value[13] ^ value[12] ^ value[10]};
endmodule

module alu (
    input  wire [2:0] op,
    input  wire [7:0] a,
    input  wire [7:0] b,
    output reg  [7:0] y,
    output wire       zero
);
    always @* begin
        case (op)
            3'd0: y = a + b;
            3'd1: y = a - b;
            3'd2: y = a & b;
            3'd3: y = a | b;
            3'd4: y = a ^ b;
            3'd5: y = a << b[2:0];
            3'd6: y = a >> b[2:0];
            default: y = a * b;
        endcase
    end
    assign zero = (y == 8'd0);
endmodule

module uart_tx #(
    parameter CLKS_PER_BIT = 104
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       start,
    input  wire [7:0] data,
    output reg        tx,
    output wire       busy
);
    localparam IDLE = 2'd0, START = 2'd1, BITS = 2'd2, STOP = 2'd3;
    reg [1:0] state;
    reg [6:0] clk_count;
    reg [2:0] bit_index;
    reg [7:0] shift;

    assign busy = (state != IDLE);

    always @(posedge clk) begin
        if (rst) begin
            state <= IDLE;
            tx <= 1'b1;
            clk_count <= 0;
            bit_index <= 0;
        end else begin
            case (state)
                IDLE: begin
                    tx <= 1'b1;
                    if (start) begin
                        shift <= data;
                        clk_count <= 0;
                        state <= START;
                    end
                end
                START: begin
                    tx <= 1'b0;
                    if (clk_count == CLKS_PER_BIT - 1) begin
                        clk_count <= 0;
                        bit_index <= 0;
                        state <= BITS;
                    end else
                        clk_count <= clk_count + 1'b1;
                end
                BITS: begin
                    tx <= shift[bit_index];
                    if (clk_count == CLKS_PER_BIT - 1) begin
                        clk_count <= 0;
                        if (bit_index == 3'd7)
                            state <= STOP;
                        else
                            bit_index <= bit_index + 1'b1;
                    end else
                        clk_count <= clk_count + 1'b1;
                end
                STOP: begin
                    tx <= 1'b1;
                    if (clk_count == CLKS_PER_BIT - 1)
                        state <= IDLE;
                    else
                        clk_count <= clk_count + 1'b1;
                end
            endcase
        end
    end
endmodule

module top (
    input  wire       clk,
    input  wire       rst,
    input  wire [2:0] op,
    output wire       uart_tx_pin,
    output wire [7:0] leds
);
    wire [15:0] rnd;
    wire [7:0]  result;
    wire        zero, busy;
    reg  [7:0]  history [0:15];
    reg  [3:0]  wr_ptr;
    reg  [7:0]  last;

    lfsr16 gen (.clk(clk), .rst(rst), .step(!busy), .value(rnd));
    alu    calc (.op(op), .a(rnd[7:0]), .b(rnd[15:8]), .y(result), .zero(zero));
    uart_tx #(.CLKS_PER_BIT(104)) serial (
        .clk(clk), .rst(rst), .start(!busy && !zero), .data(result),
        .tx(uart_tx_pin), .busy(busy));

    always @(posedge clk) begin
        if (rst)
            wr_ptr <= 0;
        else if (!busy && !zero) begin
            history[wr_ptr] <= result;
            wr_ptr <= wr_ptr + 1'b1;
        end
        last <= history[wr_ptr - 4'd1];
    end

    assign leds = last ^ {zero, busy, op, 3'b000};
endmodule
