#!/bin/bash
# orchestrator.sh - Main orchestration script

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT_DIR="${PROJECT_DIR:-$SCRIPT_DIR}"
LOG_DIR="$PROJECT_DIR/orchestration_logs"
AGENT_COUNT=6

# Initialize orchestration environment
init_orchestration() {
    echo "Initializing orchestration environment..."
    
    # Create log directory
    mkdir -p "$LOG_DIR"
    
    # Verify project setup
    cd "$PROJECT_DIR"
    poetry install
    
    # Start orchestrator daemon
    orchestrator serve --config orchestrator_config.yaml --insecure --listen 127.0.0.1:8080 --data-dir "$LOG_DIR/data" --log-file "$LOG_DIR/orchestrator.log" &
    ORCHESTRATOR_PID=$!
    echo $ORCHESTRATOR_PID > "$LOG_DIR/orchestrator.pid"
    
    # Wait for orchestrator to be ready
    sleep 5
}

# Launch agent pool
launch_agents() {
    echo "Launching $AGENT_COUNT agents..."
    
    for i in $(seq 1 $AGENT_COUNT); do
        agent_id="agent_$(printf "%03d" $i)"
        
        # Launch agent in background
        agent \
            --agent-id "$agent_id" \
            --orchestrator-endpoint "http://localhost:8080" --insecure --cpu-cores 4 --workdir "$LOG_DIR/$agent_id" \
            --log-file "$LOG_DIR/$agent_id.log" &
        
        agent_pid=$!
        echo $agent_pid > "$LOG_DIR/$agent_id.pid"
        
        echo "Launched $agent_id (PID: $agent_pid)"
        sleep 1
    done
}

# Execute testing suite
execute_testing_suite() {
    echo "Starting CashCow testing suite execution..."
    
    # Send suite execution command to orchestrator
    curl -X POST http://localhost:8080/api/v1/execute-suite \
         -H "Content-Type: application/json" \
         -d '{
             "suite_name": "cashcow_full_suite",
             "phases": ["PHASE_1_UNIT", "PHASE_2_INTEGRATION", "PHASE_3_PERFORMANCE"],
             "timeout_seconds": 7200,
             "resource_limits": {
                 "max_memory_gb": 8,
                 "max_cpu_cores": 8
             }
         }'
    
    # Monitor execution
    monitor_execution
}

# Monitor execution progress
monitor_execution() {
    echo "Monitoring execution progress..."
    
    while true; do
        # Get orchestrator status
        status=$(curl -s http://localhost:8080/api/v1/status | jq -r '.status')
        
        case $status in
            "completed")
                echo "Testing suite completed successfully!"
                break
                ;;
            "failed")
                echo "Testing suite failed!"
                get_failure_report
                exit 1
                ;;
            "running")
                # Show progress
                progress=$(curl -s http://localhost:8080/api/v1/progress)
                echo "Progress: $(echo $progress | jq -r '.overall_progress')%"
                
                # Show active tasks
                active_tasks=$(echo $progress | jq -r '.active_tasks | join(", ")')
                echo "Active tasks: $active_tasks"
                ;;
        esac
        
        sleep 10
    done
}

# Get final report
get_failure_report() {
    echo "Retrieving failure report..."
    curl -s http://localhost:8080/api/v1/final-report > "$LOG_DIR/failure_report.json"
    echo "Failure report saved to $LOG_DIR/failure_report.json"
}

# Cleanup function
cleanup() {
    echo "Cleaning up orchestration environment..."
    
    # Stop agents
    for pid_file in "$LOG_DIR"/agent_*.pid; do
        if [[ -f "$pid_file" ]]; then
            pid=$(cat "$pid_file")
            kill $pid 2>/dev/null || true
            rm "$pid_file"
        fi
    done
    
    # Stop orchestrator
    if [[ -f "$LOG_DIR/orchestrator.pid" ]]; then
        orchestrator_pid=$(cat "$LOG_DIR/orchestrator.pid")
        kill $orchestrator_pid 2>/dev/null || true
        rm "$LOG_DIR/orchestrator.pid"
    fi
    
    echo "Cleanup completed"
}

# Trap cleanup on exit
trap cleanup EXIT

# Main execution flow
main() {
    echo "CashCow Agentic Testing Orchestrator"
    echo "====================================="
    
    init_orchestration
    launch_agents
    execute_testing_suite
    
    echo "Orchestration completed successfully!"
}

# Execute main function
main "$@"
